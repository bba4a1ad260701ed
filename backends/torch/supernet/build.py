"""Building a supernet: the builder (labels, cell nodes, candidate lowering) and the
region, the steps of one region graph that the choice steps nest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from nasir.backends.torch.lowering import _seed_of, lower, prepare
from nasir.backends.torch.supernet.cells import (
    CellEdges,
    _cell_nodes,
    _CellNode,
    _CellOutput,
    _edge_pairs,
    _EdgeChoice,
)
from nasir.backends.torch.supernet.choices import (
    _Fixed,
    _InputChoice,
    _OpChoice,
    _Repeat,
    _ValueChoice,
)
from nasir.backends.torch.supernet.emit import _tiny
from nasir.errors import BackendError
from nasir.graph import Graph
from nasir.ops import Op, has_refs
from nasir.space import Space
from nasir.types import TensorType

if TYPE_CHECKING:
    pass


def _key(label: str) -> str:
    return label.replace(".", "__")

class _Builder:
    def __init__(self, space: Space, fixed: Mapping[str, Any], seed: int,
                 per_input: bool = False, edge_alphas: bool = False) -> None:
        self.space = space
        self.fixed = dict(fixed)
        self.seed = seed
        self.per_input = per_input or edge_alphas
        self.edge_alphas = edge_alphas
        self.labels: dict[str, tuple] = {}
        #: cell nodes with per-edge logits, by key (shared by the cells of one kind)
        self.cells: dict[str, CellEdges] = {}
        self.count = 0

    def cell(self, in_labels: tuple[str, str], op_labels: tuple[str, str]) -> CellEdges:
        """The :class:`CellEdges` of a node (made once; cells of one kind share it). Its
        key is the labels' common stem (``normal_b2``), else the labels joined."""
        for c in self.cells.values():
            if c.in_labels == in_labels and c.op_labels == op_labels:
                return c
        labels = (*in_labels, *op_labels)
        stem = ""
        for chars in zip(*labels):  # the labels' common leading characters
            if len(set(chars)) > 1:
                break
            stem += chars[0]
        stem = stem.rstrip("_.")
        key = _key(stem) if stem else "__".join(_key(lb) for lb in labels)
        while key in self.cells or key in {_key(d.label) for d in self.space.decisions}:
            key += "_edges"
        for lb in labels:
            self.use(lb)
        d = self.space.decision
        c = CellEdges(key, in_labels, op_labels, d(in_labels[0]).options,
                      d(op_labels[0]).options)
        self.cells[key] = c
        return c

    def region(self, r: Graph, in_types: list[TensorType]) -> _Region:
        """The steps of region ``r`` on operands of ``in_types`` (choice steps nest
        regions through this, so they need not import the region class)."""
        return _Region(self, r, in_types)

    def use(self, label: str) -> None:
        if label not in self.fixed:
            self.labels[label] = self.space.decision(label).options

    def lower_op(self, op: Op, in_types: list[TensorType]) -> tuple[nn.Module, TensorType]:
        g = _tiny(op, in_types)
        self.count += 1
        m = lower(g, seed=_seed_of(self.seed, self.count))
        out = prepare(g).output.type
        return m, out  # type: ignore[return-value]

    def uniform(self, types: list[TensorType], what: str, label: str, loc: Any) -> TensorType:
        if len(set(types)) > 1:
            shown = ", ".join(str(t) for t in dict.fromkeys(types))
            raise BackendError(
                f"decision {label} changes the type of {what} ({shown}); a supernet needs "
                "one type per value",
                where=f"decision {label}", loc=loc,
                hint=f"pin it: Supernet(space, fixed={{{label!r}: ...}})")
        if not types:
            raise BackendError(f"no option of decision {label} gives a valid network here",
                               loc=loc)
        return types[0]

class _Region(nn.Module):
    """Steps of one region graph, run on its operands."""

    def __init__(self, b: _Builder, r: Graph, in_types: list[TensorType]) -> None:
        super().__init__()
        self.steps: list[tuple[str, int, tuple[int, ...], str]] = []
        self.mods = nn.ModuleDict()
        types: list[Any] = []
        nodes = r.nodes()
        pos = {n: k for k, n in enumerate(nodes)}
        edges = _edge_pairs(b, r) if b.per_input else {}
        cells = _cell_nodes(b, r, edges) if b.edge_alphas else {}
        in_cell = {c for parts in cells.values() for c in parts[1::2]}
        for n in nodes:
            ins = tuple(pos[i] for i in n.inputs)
            its = [types[i] for i in ins]
            key = "n" + "".join(c if c.isalnum() else "_" for c in n.name)
            op = n.op
            if n in edges.values():  # a select feeding one choose: its operands pass on
                self.steps.append(("operands", 0, ins, key))
                types.append(tuple(its))
                continue
            if n in in_cell:  # an operand of a cell node: the node mixes every edge
                self.steps.append(("pass", 0, ins, key))
                types.append(its[0])
                continue
            if n in cells:
                step_c = _CellNode(b, cells[n], list(its[0]))
                self.mods[key] = step_c
                self.steps.append(("step", 0, ins, key))
                types.append(step_c.out_type)
                continue
            if n in edges:
                step_e = _EdgeChoice(b, edges[n], n, list(its[0]))
                self.mods[key] = step_e
                self.steps.append(("step", 0, ins, key))
                types.append(step_e.out_type)
                continue
            if op.name == "input":
                self.steps.append(("input", 0, ins, key))
                types.append(op.infer(()))
                continue
            if op.name == "arg":
                self.steps.append(("arg", op.index, ins, key))  # type: ignore[attr-defined]
                types.append(in_types[op.index])  # type: ignore[attr-defined]
                continue
            if op.name == "choose":
                step: Any = _OpChoice(b, n, its)
            elif op.name == "repeat":
                step = _Repeat(b, n, its)
            elif op.name == "select":
                step = _InputChoice(b, n, its)
            elif op.name == "cell_output" and has_refs(op) and bool(getattr(op, "project", False)):
                step = _CellOutput(b, n, its)
            elif has_refs(op):
                step = _ValueChoice(b, n, its)
            else:
                step = _Fixed(b, op, its)
            self.mods[key] = step
            self.steps.append(("step", 0, ins, key))
            types.append(step.out_type)
        self.out = pos[r.output]
        self.out_type = types[self.out]
        #: the region's value is all zeros (its output is a ``zero`` op)
        self.zero = r.output.op.name == "zero"
        # drop each value after its last use, as fx's generated code does: holding every
        # intermediate until the region ends would keep tensors autograd does not need
        last: dict[int, int] = {}
        for k, (_, _, ins, _) in enumerate(self.steps):
            for i in ins:
                last[i] = k
        self.frees: list[tuple[int, ...]] = [
            tuple(i for i, k2 in last.items() if k2 == k and i != self.out)
            for k in range(len(self.steps))]

    def run(self, ctx: Any, args: list[Any], emit: bool = False) -> Any:
        vals: list[Any] = []
        for k, (kind, extra, pos, key) in enumerate(self.steps):
            if kind == "arg":
                vals.append(args[extra])
            elif kind == "input":
                vals.append(args[0])
            elif kind == "operands":
                vals.append([vals[i] for i in pos])
            elif kind == "pass":
                vals.append(vals[pos[0]])
            else:
                m = self.mods[key]
                ins = [vals[i] for i in pos]
                vals.append(m.emit(ctx, ins) if emit else m(ctx, ins))  # type: ignore[operator]
                del ins
            for i in self.frees[k]:
                vals[i] = None
        return vals[self.out]
