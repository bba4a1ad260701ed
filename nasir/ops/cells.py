"""Composite ops of cell search spaces (NASNet, AmoebaNet, PNAS, DARTS, ENAS micro).

A cell's edge applies one named op to a chosen hidden state. In a reduction cell the
op strides only when its input is a cell input (still at the cell's input resolution),
not when it is an already reduced intermediate node; :class:`CellEdgeOp` reads that from
the input's height (``reduce_from``), so the choice of input and the choice of op stay
two separate decisions of the space.

>>> from nasir.types import TensorType
>>> t = TensorType((44, 28, 28))
>>> CellEdgeOp(op="sep_conv_3x3", out_channels=44, reduce_from=28).infer((t,))
f32[44,14,14]
>>> CellEdgeOp(op="sep_conv_3x3", out_channels=44, reduce_from=28).infer(
...     (TensorType((44, 14, 14)),))
f32[44,14,14]
>>> PathReduceOp(out_channels=22).infer((TensorType((32, 111, 111)),))
f32[22,56,56]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import CompositeOp, Ref, concrete, register_op
from nasir.ops.composite import DilConvOp, ReLUConvBNOp
from nasir.ops.primitive import (
    AvgPool2dOp,
    BatchNormOp,
    ConcatOp,
    Conv2dOp,
    CropOp,
    DepthwiseConv2dOp,
    IdentityOp,
    MaxPool2dOp,
    ReLUOp,
    ZeroOp,
)

__all__ = ["CELL_OPS", "CellAlignOp", "CellEdgeOp", "CellOutputOp", "PathReduceOp"]

#: every op name a :class:`CellEdgeOp` knows, with its meaning
CELL_OPS = {
    "none": "zeros (DARTS); strided: zeros of the subsampled input",
    "skip_connect": "identity; strided: factorized reduce (DARTS, ENAS)",
    "identity": "identity; strided or widening: ReLU, 1x1 conv, BN (NASNet 'none')",
    "avg_pool_3x3": "3x3 average pool (padding excluded), 1x1 conv + BN if widening",
    "max_pool_3x3": "3x3 max pool, 1x1 conv + BN if widening",
    "max_pool_5x5": "5x5 max pool",
    "max_pool_7x7": "7x7 max pool",
    "sep_conv_3x3": "(ReLU, depthwise 3x3, 1x1, BN) twice",
    "sep_conv_5x5": "(ReLU, depthwise 5x5, 1x1, BN) twice",
    "sep_conv_7x7": "(ReLU, depthwise 7x7, 1x1, BN) twice",
    "dil_conv_3x3": "ReLU, depthwise 3x3 dilation 2, 1x1, BN",
    "dil_conv_5x5": "ReLU, depthwise 5x5 dilation 2, 1x1, BN",
    "conv_1x1": "ReLU, 1x1 conv, BN",
    "conv_3x3": "bottleneck (ReLU-1x1-BN to C/4), ReLU, 3x3 conv, BN, ReLU, 1x1 to C, BN",
    "conv_1x3_3x1": "bottleneck to 3C/8 around 1x3 conv, BN, ReLU, 3x1 conv",
    "conv_1x7_7x1": "bottleneck to C/4 around 1x7 conv, BN, ReLU, 7x1 conv",
}


def _bottleneck_conv(emit, x, op: str, c: int, s: int):
    """AmoebaNet's TF conv ops: a 1x1 bottleneck around the k×k / 1×k+k×1 convs."""
    r = int(3 * c / 8) if op == "conv_1x3_3x1" else int(c / 4)
    y = emit(ReLUOp(), x)
    width = c if r < 1 else r
    if r >= 1:
        y = emit(ReLUOp(), emit(BatchNormOp(), emit(Conv2dOp(r, 1), y)))
    if op == "conv_3x3":
        y = emit(Conv2dOp(width, 3, s), y)
    else:
        k = int(op.split("_")[1][-1])  # conv_1x7_7x1 -> 7
        y = emit(ReLUOp(), emit(BatchNormOp(), emit(Conv2dOp(width, (1, k), (1, s)), y)))
        y = emit(Conv2dOp(width, (k, 1), (s, 1)), y)
    y = emit(BatchNormOp(), y)
    if r >= 1:
        y = emit(BatchNormOp(), emit(Conv2dOp(c, 1), emit(ReLUOp(), y)))
    return y


def _pool(emit, x, kind: str, k: int, s: int):
    if kind == "avg":
        return emit(AvgPool2dOp(k, s, k // 2, count_include_pad=False), x)
    return emit(MaxPool2dOp(k, s, k // 2), x)


@register_op
@dataclass(frozen=True)
class PathReduceOp(CompositeOp):
    """NASNet's factorized reduction: two 1×1 convs on offset stride-2 grids, concatenated,
    then BN (``stride=1``: 1×1 conv + BN). ``relu`` puts a ReLU first (DARTS).

    Works on odd sizes too: the shifted path is zero-padded so both paths agree (TF pads
    bottom/right, here the pad is symmetric; shapes and counts are the same). Each path
    has ``out_channels // 2`` filters, so an odd width loses one channel, as in TF.
    """

    name: ClassVar[str] = "path_reduce"
    out_channels: int | Ref = 16
    stride: int = 2
    relu: bool = False

    def check(self) -> None:
        self._pos_int("out_channels", 2)
        self._choice("stride", (1, 2))

    def lower(self, emit, x):
        if self.relu:
            x = emit(ReLUOp(), x)
        if self.stride == 1:
            return emit(BatchNormOp(), emit(Conv2dOp(self.out_channels, 1, padding=0), x))
        _, h, w = emit.type(x).shape
        half = concrete(self.out_channels) // 2
        a = emit(Conv2dOp(half, 1, 2, padding=0), x)
        shifted = emit(CropOp(1, 1, 0, 0), x)
        b = emit(Conv2dOp(half, 1, 2, padding=(h % 2, w % 2)), shifted)
        return emit(BatchNormOp(), emit(ConcatOp(), a, b))


@register_op
@dataclass(frozen=True)
class CellAlignOp(CompositeOp):
    """Bring a hidden state to ``out_channels`` channels and height ``size`` (NASNet's
    ``_reduce_prev_layer``): factorized reduce when larger, ReLU-1×1-BN when only the
    channels differ, identity otherwise."""

    name: ClassVar[str] = "cell_align"
    out_channels: int | Ref = 16
    size: int = 1

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("size")

    def lower(self, emit, x):
        c, h, _ = emit.type(x).shape
        if h != self.size:
            return emit(PathReduceOp(self.out_channels, 2, relu=True), x)
        if c != self.out_channels:
            return emit(ReLUConvBNOp(self.out_channels, 1), x)
        return emit(IdentityOp(), x)


@register_op
@dataclass(frozen=True)
class CellEdgeOp(CompositeOp):
    """One edge of a cell: the op named ``op`` (see :data:`CELL_OPS`) to ``out_channels``.

    ``reduce_from`` is the height of the cell inputs in a reduction cell (0 in a normal
    cell): an input of that height is strided by 2, a smaller one (an intermediate node
    that is already reduced) is not.
    """

    name: ClassVar[str] = "cell_edge"
    op: str | Ref = "skip_connect"
    out_channels: int | Ref = 16
    reduce_from: int = 0

    def check(self) -> None:
        self._choice("op", tuple(CELL_OPS))
        self._pos_int("out_channels")
        self._pos_int("reduce_from", 0)

    def lower(self, emit, x):
        cin, h, _ = emit.type(x).shape
        c = self.out_channels
        assert isinstance(c, int), "an instantiated op has no $label references left"
        s = 2 if self.reduce_from and h == self.reduce_from else 1
        op = str(self.op)
        if op == "none":
            y = x if s == 1 else emit(MaxPool2dOp(1, 2, 0), x)
            return emit(ZeroOp(), y)
        if op in ("skip_connect", "identity"):
            if s == 1 and cin == c:
                return emit(IdentityOp(), x)
            if op == "skip_connect":
                return emit(PathReduceOp(c, s, relu=True), x)
            return emit(ReLUConvBNOp(c, 1, s), x)
        if "pool" in op:
            k = int(op[-1])
            y = _pool(emit, x, op[:3], k, s)
            if cin != c:
                y = emit(BatchNormOp(), emit(Conv2dOp(c, 1), y))
            return y
        if op.startswith("sep_conv"):
            k = int(op[-1])
            y = x
            for stride in (s, 1):
                y = emit(ReLUOp(), y)
                y = emit(DepthwiseConv2dOp(k, stride), y)
                y = emit(BatchNormOp(), emit(Conv2dOp(c, 1), y))
            return y
        if op.startswith("dil_conv"):
            return emit(DilConvOp(c, int(op[-1]), s), x)
        if op == "conv_1x1":
            return emit(ReLUConvBNOp(c, 1, s), x)
        return _bottleneck_conv(emit, x, op, c, s)


@register_op
@dataclass(frozen=True)
class CellOutputOp(CompositeOp):
    """A cell's output: the concatenation of its hidden states (all of them are inputs)
    that no block consumed, plus those listed in ``keep``.

    ``used`` holds the input index each block operand picked (refs to the space's input
    decisions before instantiation). States whose shape differs from the last state's
    are brought to it by :class:`PathReduceOp` first (NASNet's ``_combine_unused_states``);
    ``project > 0`` ends with ReLU-1×1-conv-BN to that width (ENAS).
    """

    name: ClassVar[str] = "cell_output"
    arity: ClassVar[int] = -1
    used: tuple[int | Ref, ...] = ()
    keep: tuple[int, ...] | Ref = ()
    project: int = 0

    def check(self) -> None:
        for v in (*self.used, *concrete(self.keep)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise self._bad("used", f"must hold state indices >= 0, got {v!r}")
        self._pos_int("project", 0)

    def lower(self, emit, *states):
        used = set(self.used)
        keep = concrete(self.keep)
        picked = [i for i in range(len(states)) if i not in used or i in keep]
        final = emit.type(states[-1]).shape
        parts = []
        for i in picked:
            x = states[i]
            c, h, _ = emit.type(x).shape
            if h != final[1] or c != final[0]:
                x = emit(PathReduceOp(final[0], 2 if h != final[1] else 1), x)
            parts.append(x)
        y = parts[0] if len(parts) == 1 else emit(ConcatOp(), *parts)
        if self.project:
            y = emit(ReLUConvBNOp(self.project, 1), y)
        return y
