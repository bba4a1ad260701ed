"""Building a supernet: the builder, a client of the mixed space interpreter
(:class:`~nasir.interpret.mixed.MixedInterpreter`), and the region, the steps of one region
graph that the choice steps nest.

What a choice point means — its options, which are open, which regions an option or a
repetition runs, which decisions a node reaches, edges and cell nodes — is the
interpreter's; the builder says only what each point becomes here: a step module over
every open option, its value at build time being its output type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from torch import nn

from nasir.backends.torch.lowering import _seed_of, lower, prepare
from nasir.backends.torch.supernet.cells import CellEdges, _CellNode, _CellOutput, _EdgeChoice
from nasir.backends.torch.supernet.choices import (
    _Fixed,
    _InputChoice,
    _OpChoice,
    _Repeat,
    _ValueChoice,
)
from nasir.backends.torch.supernet.emit import _tiny
from nasir.errors import BackendError
from nasir.graph import Graph, Node
from nasir.interpret.mixed import Cell, Edge, MixedInterpreter, Point, ValuePoint
from nasir.ops import Op
from nasir.ops.cells import CellOutputOp
from nasir.space import Space
from nasir.types import TensorType


def _projected_cell_output(b: Any, p: ValuePoint, ins: list[Any]) -> Any:
    """ENAS-micro's projected cell output (``project > 0``): one 1×1 projection over
    whichever states the sampled path leaves unused (others: the generic value choice)."""
    return _CellOutput(b, p, ins) if cast(CellOutputOp, p.op).project else None


#: op class → how a value point of that op is mixed when the generic rule (one module per
#: resolved op, picked by the decisions) does not serve; a rule may return ``None`` to fall
#: back to the generic one. Registered like the lowering registries, by class, not name.
VALUE_RULES: dict[type[Op], Any] = {CellOutputOp: _projected_cell_output}


def _key(label: str) -> str:
    return label.replace(".", "__")


class _Step(Protocol):
    """A step module: run on a forward's context, or emitted into a graph."""

    out_type: Any

    def __call__(self, ctx: Any, ins: list[Any]) -> Any: ...

    def emit(self, e: Any, ins: list[Any]) -> Any: ...


class _Region(nn.Module):
    """Steps of one region graph, run on its operands (the builder fills them)."""

    def __init__(self) -> None:
        super().__init__()
        #: (kind, arg index, operand positions, module key)
        self.steps: list[tuple[str, int, tuple[int, ...], str]] = []
        self.mods = nn.ModuleDict()
        self.out = 0
        self.out_type: Any = None
        #: the region's value is all zeros (its output is a ``zero`` op)
        self.zero = False
        self.frees: list[tuple[int, ...]] = []

    def add(self, kind: str, extra: int, ins: tuple[int, ...], key: str,
            mod: Any = None) -> None:
        self.steps.append((kind, extra, ins, key))
        if mod is not None:
            self.mods[key] = mod

    def finish(self, out: int, out_type: Any, zero: bool) -> None:
        self.out, self.out_type, self.zero = out, out_type, zero
        # drop each value after its last use, as fx's generated code does: holding every
        # intermediate until the region ends would keep tensors autograd does not need
        last: dict[int, int] = {}
        for k, (_, _, ins, _) in enumerate(self.steps):
            for i in ins:
                last[i] = k
        self.frees = [tuple(i for i, k2 in last.items() if k2 == k and i != self.out)
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
                m = cast(_Step, self.mods[key])
                ins = [vals[i] for i in pos]
                vals.append(m.emit(ctx, ins) if emit else m(ctx, ins))
                del ins
            for i in self.frees[k]:
                vals[i] = None
        return vals[self.out]


class _Builder(MixedInterpreter[Any, _Region]):
    """Lowers a space's body to :class:`_Region` steps. A value at build time is its
    type (an edge's select: the tuple of its candidates' types)."""

    def __init__(self, space: Space, fixed: Mapping[str, Any], seed: int,
                 per_input: bool = False, edge_alphas: bool = False) -> None:
        super().__init__(space, dict(fixed), edges=per_input or edge_alphas,
                         cells=edge_alphas)
        self.seed = seed
        #: cell nodes with per-edge logits, by key (shared by the cells of one kind)
        self.cells_by_key: dict[str, CellEdges] = {}
        self.count = 0
        #: the regions being built, innermost last, with their nodes' positions
        self._at: list[tuple[_Region, dict[Node, int]]] = []

    # -- regions and steps --------------------------------------------------------------
    def subregion(self, r: Graph, args: list[Any]) -> _Region:
        """The steps of region ``r`` on operands of types ``args``."""
        reg = _Region()
        pos = {n: k for k, n in enumerate(r.nodes())}
        self._at.append((reg, pos))
        try:
            out_type = self.region(r, list(args))
        finally:
            self._at.pop()
        reg.finish(pos[r.output], out_type, r.output.op.name == "zero")
        return reg

    def _step(self, n: Node, mod: Any, kind: str = "step", extra: int = 0) -> None:
        reg, pos = self._at[-1]
        key = "n" + "".join(c if c.isalnum() else "_" for c in n.name)
        reg.add(kind, extra, tuple(pos[i] for i in n.inputs), key, mod)

    def op(self, node: Node, op: Op, ins: list[Any]) -> Any:
        step = _Fixed(self, op, ins)
        self._step(node, step)
        return step.out_type

    def input(self, node: Node, op: Op, ins: list[Any]) -> Any:
        self._step(node, None, "input")
        return op.infer(())

    def arg(self, node: Node, index: int, args: list[Any]) -> Any:
        self._step(node, None, "arg", index)
        return args[index]

    def choose(self, p: Point, ins: list[Any]) -> Any:
        return self._made(p.node, _OpChoice(self, p, ins))

    def repeat(self, p: Point, x: Any) -> Any:
        return self._made(p.node, _Repeat(self, p, [x]))

    def select(self, p: Point, ins: list[Any]) -> Any:
        return self._made(p.node, _InputChoice(self, p, ins))

    def values(self, p: ValuePoint, ins: list[Any]) -> Any:
        rule = VALUE_RULES.get(type(p.op))
        step = rule(self, p, ins) if rule is not None else None
        return self._made(p.node, step if step is not None else _ValueChoice(self, p, ins))

    def edge_operands(self, p: Point, ins: list[Any]) -> Any:
        self._step(p.node, None, "operands")  # its operands pass on to the edge
        return tuple(ins)

    def edge(self, e: Edge, x: Any) -> Any:
        return self._made(e.choice.node, _EdgeChoice(self, e, list(x)))

    def cell_operand(self, e: Edge, x: Any) -> Any:
        self._step(e.choice.node, None, "pass")  # the cell node mixes every edge
        return x

    def cell(self, c: Cell, ins: list[Any]) -> Any:
        return self._made(c.node, _CellNode(self, c, list(ins[0])))

    def _made(self, n: Node, step: Any) -> Any:
        self._step(n, step)
        return step.out_type

    # -- what the steps ask ------------------------------------------------------------
    def cell_edges(self, c: Cell) -> CellEdges:
        """The :class:`CellEdges` of a cell node (made once; cells of one kind share it).
        Its key is the labels' common stem (``normal_b2``), else the labels joined."""
        in_labels = (c.a.inp.label, c.b.inp.label)
        op_labels = (c.a.choice.label, c.b.choice.label)
        for ce in self.cells_by_key.values():
            if ce.in_labels == in_labels and ce.op_labels == op_labels:
                return ce
        labels = c.labels
        stem = ""
        for chars in zip(*labels):  # the labels' common leading characters
            if len(set(chars)) > 1:
                break
            stem += chars[0]
        stem = stem.rstrip("_.")
        key = _key(stem) if stem else "__".join(_key(lb) for lb in labels)
        while key in self.cells_by_key or key in {_key(d.label) for d in self.space.decisions}:
            key += "_edges"
        ce = CellEdges(key, in_labels, op_labels, c.a.inp.options, c.a.choice.options)
        self.cells_by_key[key] = ce
        return ce

    def lower_op(self, op: Op, in_types: list[TensorType]) -> tuple[nn.Module, TensorType]:
        g = _tiny(op, in_types)
        self.count += 1
        m = lower(g, seed=_seed_of(self.seed, self.count))
        return m, prepare(g).output.ttype

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
