"""Cell structure in supernets: per-edge mixed ops (DARTS, ENAS), DARTS' cell node with one
logit per (edge, op) (:class:`CellEdges`), and ENAS-micro's projected cell output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.supernet.choices import _region
from nasir.backends.torch.supernet.emit import _Emit
from nasir.backends.torch.supernet.mixing import ONE_PATH
from nasir.errors import BackendError
from nasir.graph import Node
from nasir.interpret.mixed import Cell, Edge, ValuePoint
from nasir.ops import AddOp, Op
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.backends.torch.supernet.build import _Builder


#: options that output zeros: DARTS' derivation never keeps them
_ZERO_OPTIONS = ("none", "zero")

@dataclass(frozen=True)
class CellEdges:
    """A cell node with one logit per (incoming edge, op), as DARTS builds it.

    The node sums two operands, each an input decision (``in_labels``: which earlier
    state) and an op decision (``op_labels``) over the same ``inputs`` and ``ops``. DARTS'
    supernet gives every incoming edge (every state in ``inputs``) its own mixed op and
    sums them all: the logits are one ``len(inputs) × len(ops)`` matrix (``key`` in
    :attr:`Supernet.alphas`), softmax over the ops of each edge.

    >>> c = CellEdges("n", ("n_in_a", "n_in_b"), ("n_op_a", "n_op_b"), (0, 1, 2),
    ...               ("none", "skip", "conv"))
    >>> c.derive([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    {'n_in_a': 2, 'n_op_a': 'conv', 'n_in_b': 1, 'n_op_b': 'skip'}
    """

    key: str
    in_labels: tuple[str, str]
    op_labels: tuple[str, str]
    inputs: tuple
    ops: tuple

    @property
    def labels(self) -> tuple[str, ...]:
        """The four decisions the node stands for."""
        return (*self.in_labels, *self.op_labels)

    def derive(self, weights: Sequence[Sequence[float]]) -> dict[str, Any]:
        """DARTS' derivation (``genotype()._parse`` of quark0/darts): the node keeps its two
        incoming edges of largest strongest non-zero op weight (stronger first; ties: the
        earlier state), each with that op. ``none``/``zero`` is never picked while another
        op exists. ``weights``: per edge, the softmax over the ops."""
        rows = [[float(v) for v in r] for r in weights]
        live = [k for k, o in enumerate(self.ops) if not (isinstance(o, str)
                                                            and o in _ZERO_OPTIONS)]
        live = live or list(range(len(self.ops)))

        def best(j: int) -> int:
            return max(live, key=lambda k: (rows[j][k], -k))

        order = sorted(range(len(rows)), key=lambda j: (-rows[j][best(j)], j))
        kept = (order * 2)[:2]  # one candidate input: both operands read it
        out: dict[str, Any] = {}
        for in_lb, op_lb, j in zip(self.in_labels, self.op_labels, kept):
            out[in_lb] = self.inputs[j]
            out[op_lb] = self.ops[best(j)]
        return out

class _EdgeChoice(nn.Module):
    """A cell block operand as DARTS/ENAS build it: the op choice applied to every
    candidate input with weights of its own (one mixed edge per input), mixed over
    (input, op) by both decisions. Inputs of different resolutions (a reduction cell's
    cell inputs and its intermediate states) are fine: each edge's op is lowered for its
    input's type, and only the outputs must agree."""

    def __init__(self, b: _Builder, e: Edge, its: list[TensorType]) -> None:
        super().__init__()
        self.in_label, self.op_label = e.inp.label, e.choice.label
        self.labels = e.labels
        self.edges = nn.ModuleDict()
        #: module key → (its mixing key over the free labels, the operand it reads)
        self.keys: dict[str, tuple[tuple[int, ...], int]] = {}
        types = []
        zeros = []
        for i in e.inp.open:
            j = e.inp.options[i]
            for k in e.choice.open:
                reg = b.branch(e.choice, k, [its[j]])
                self.edges[f"i{i}_o{k}"] = reg
                mix_key = tuple(v for p, v in ((e.inp, i), (e.choice, k)) if not p.pinned)
                self.keys[f"i{i}_o{k}"] = (mix_key, j)
                types.append(reg.out_type)
                if reg.zero:
                    zeros.append(mix_key)
        ch = e.choice.node
        self.out_type: TensorType = b.uniform(types, f"%{ch.name} (choose on select)",
                                              self.op_label, ch.loc)
        self.zeros = frozenset(zeros)

    def _thunks(self, ctx: Any, ins: list[Any], emit: bool) -> dict[tuple[int, ...], Any]:
        out = {}
        for name, m in self.edges.items():
            key, j = self.keys[name]
            reg = _region(m)
            out[key] = (lambda reg=reg, j=j: reg.run(ctx, [ins[j]], emit))
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        th = self._thunks(ctx, ins[0], False)
        return th[()]() if not self.labels else ctx.mix(self.labels, th, self.zeros)

    def emit(self, e: _Emit, ins: list[Any]) -> Node:
        th = self._thunks(e, ins[0], True)
        return th[()]() if not self.labels else e.mix(self.labels, th, self.zeros)

class _CellNode(nn.Module):
    """DARTS' cell node: one mixed op per incoming edge (candidate input state), each op
    with its own weights, summed over every edge with the softmax of the node's
    ``edges × ops`` logits (:class:`CellEdges`). A child keeps the two edges its
    assignment names (``in_a``/``op_a`` and ``in_b``/``op_b``), summed like the space's
    block."""

    def __init__(self, b: _Builder, c: Cell, its: list[TensorType]) -> None:
        super().__init__()
        self.spec = b.cell_edges(c)
        self.edges = nn.ModuleDict()
        types = []
        zeros = []
        for i, j in enumerate(self.spec.inputs):
            for k in range(len(self.spec.ops)):
                reg = b.branch(c.a.choice, k, [its[j]])
                self.edges[f"i{i}_o{k}"] = reg
                types.append(reg.out_type)
                if reg.zero:
                    zeros.append((i, k))
        ca = c.a.choice.node
        self.out_type: TensorType = b.uniform(types, f"%{ca.name} (cell node)",
                                              self.spec.op_labels[0], ca.loc)
        self.zeros = frozenset(zeros)

    def _thunks(self, ctx: Any, ins: Any, emit: bool) -> dict[tuple[int, ...], Any]:
        out: dict[tuple[int, ...], Any] = {}
        for i, j in enumerate(self.spec.inputs):
            for k in range(len(self.spec.ops)):
                reg = _region(self.edges[f"i{i}_o{k}"])
                out[(i, k)] = (lambda reg=reg, j=j: reg.run(ctx, [ins[j]], emit))
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if ctx.mode not in ("darts", "gumbel"):
            raise BackendError("a cell node with per-edge logits mixes every edge",
                               hint="use darts or gumbel mode (edge_alphas=True)")
        return ctx.mix_edges(self.spec.key, self._thunks(ctx, ins[0], False), self.zeros)

    def emit(self, e: _Emit, ins: list[Any]) -> Node:
        operands: list[Node] = ins[0]
        if e.path is None:
            return e.mix((self.spec.key,), self._thunks(e, operands, True), self.zeros)
        terms = []
        for in_lb, op_lb in zip(self.spec.in_labels, self.spec.op_labels):
            i, k = e.path[in_lb], e.path[op_lb]
            reg = _region(self.edges[f"i{i}_o{k}"])
            terms.append(reg.run(e, [operands[self.spec.inputs[i]]], True))
        return e.add(AddOp(), terms)

class _CellOutput(nn.Module):
    """A searched cell's output (:class:`~nasir.ops.CellOutputOp` with ``project``): the
    states no block consumed — which depends on every input choice of the cell — are
    concatenated and projected by ReLU-1×1-conv-BN. As in ENAS, one projection weight spans
    all states and each path uses the columns of its loose ends (enumerating the
    combinations instead is 518,400 candidates for ENAS-micro). Single-path modes only."""

    def __init__(self, b: _Builder, p: ValuePoint, its: list[TensorType]) -> None:
        super().__init__()
        op: Any = p.op
        self.name = p.node.name
        self.its = list(its)
        self.point = p
        final = its[-1].shape
        self.reduce = nn.ModuleDict()
        from nasir.ops import PathReduceOp

        for i, t in enumerate(its):
            if t.shape[0] != final[0] or t.shape[1] != final[1]:
                rop = PathReduceOp(final[0], 2 if t.shape[1] != final[1] else 1)
                self.reduce[str(i)], _ = b.lower_op(rop, [t])
        width = final[0] * len(its)
        full = TensorType((width, *final[1:]), its[-1].dtype)
        self.proj, self.out_type = b.lower_op(_relu_conv_bn(op.project), [full])
        self.conv = next(m for m in self.proj.modules() if isinstance(m, nn.Conv2d))
        self.bn = next(m for m in self.proj.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.chan = final[0]

    def _concrete(self, index_of: Any) -> Any:
        """The cell output op of the path (``index_of(label)`` → option index)."""
        return self.point.resolve(index_of)

    def _picked(self, concrete: Any) -> list[int]:
        used, keep = set(concrete.used), set(concrete.keep)
        return [i for i in range(len(self.its)) if i not in used or i in keep]

    def _cols(self, picked: list[int]) -> torch.Tensor:
        """The projection's input columns of the ``picked`` states."""
        c = self.chan
        return torch.cat([torch.arange(i * c, (i + 1) * c) for i in picked])

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if ctx.mode not in ONE_PATH:
            raise BackendError(
                f"%{self.name} (cell_output) depends on the sampled path; mixed ({ctx.mode}) "
                "supernets cannot run it", hint="use single or binarized mode (ENAS, "
                "SPOS, ProxylessNAS, hard Gumbel), or pin the cell's input decisions")
        picked = self._picked(self._concrete(ctx.pick))
        parts = [self.reduce[str(i)](ins[i]) if str(i) in self.reduce else ins[i]
                 for i in picked]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        w = self.conv.weight[:, self._cols(picked)]
        y = F.conv2d(F.relu(y), w, self.conv.bias, self.conv.stride, self.conv.padding,
                     self.conv.dilation)
        return self.bn(y)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if e.path is None:
            raise BackendError(f"%{self.name} (cell_output) has no mixed graph",
                               hint="predict memory for one path (single/binarized mode)")
        path = e.path
        concrete = self._concrete(lambda lb: path[lb])
        picked = self._picked(concrete)
        # the concrete op's lowered weights, in its own order: reductions, then the
        # projection with the loose ends' columns
        tensors: list[torch.Tensor] = []
        for i in picked:
            if str(i) in self.reduce:
                tensors += list(self.reduce[str(i)].state_dict().values())
        cols = self._cols(picked)
        for t in self.proj.state_dict().values():
            tensors.append(t[:, cols] if t is not None and t.dim() == 4 and
                           t.shape == self.conv.weight.shape else t)
        return e.add(concrete, ins, _Tensors(tensors))

def _relu_conv_bn(width: int) -> Op:
    from nasir.ops import ReLUConvBNOp

    return ReLUConvBNOp(out_channels=width, kernel=1)

class _Tensors(nn.Module):
    """Weights for :meth:`Supernet.child`, in the order of the child's lowered op."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        for k, t in enumerate(tensors):
            self.register_buffer(f"t{k}", t.detach().clone())
