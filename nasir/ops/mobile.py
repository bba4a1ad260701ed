"""FBNet's inverted-residual block and skip (the released ``fbnet_builder`` forms).

>>> from nasir.types import TensorType
>>> t = TensorType((16, 56, 56))
>>> blk = IRFBlockOp(out_channels=16, kernel=3, expand=1)
>>> blk.params((t,), blk.infer((t,)))  # the expansion-1 block keeps its 1x1 expand conv
752
>>> FBNetSkipOp(out_channels=24, stride=2).infer((t,))
f32[24,28,28]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import CompositeOp, Ref, concrete, register_op
from nasir.ops.primitive import AddOp, BatchNormOp, Conv2dOp, DepthwiseConv2dOp, IdentityOp, ReLUOp

__all__ = ["FBNetSkipOp", "IRFBlockOp"]


@register_op
@dataclass(frozen=True)
class IRFBlockOp(CompositeOp):
    """FBNet inverted-residual block: 1×1 (grouped) expand, BN, ReLU; depthwise k×k
    (``cascade``: two of them, the ``k3_sep`` candidate), BN, ReLU; 1×1 (grouped)
    project, BN; identity residual at stride 1 with equal widths.

    ``always_expand`` keeps the 1×1 expand conv of expansion-1 blocks, as the released
    FBNet models (``maskrcnn-benchmark`` ``fbnet_builder``) do. The channel shuffle after a
    grouped expand has no params or MACs and is not modelled.
    """

    name: ClassVar[str] = "irf_block"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    expand: int | Ref = 6
    groups: int = 1
    cascade: bool = False
    always_expand: bool = True

    def check(self) -> None:
        for f in ("out_channels", "kernel", "stride", "expand", "groups"):
            self._pos_int(f)

    def lower(self, emit, x):
        cin = emit.type(x).shape[0]
        mid = cin * concrete(self.expand)
        y = x
        if self.always_expand or mid != cin:
            y = emit(ReLUOp(), emit(BatchNormOp(), emit(Conv2dOp(mid, 1, groups=self.groups), y)))
        y = emit(DepthwiseConv2dOp(self.kernel, self.stride), y)
        y = emit(ReLUOp(), emit(BatchNormOp(), y))
        if self.cascade:
            y = emit(ReLUOp(), emit(BatchNormOp(), emit(DepthwiseConv2dOp(self.kernel, 1), y)))
        y = emit(BatchNormOp(), emit(Conv2dOp(self.out_channels, 1, groups=self.groups), y))
        if self.stride == 1 and cin == self.out_channels:
            y = emit(AddOp(), x, y)
        return y


@register_op
@dataclass(frozen=True)
class FBNetSkipOp(CompositeOp):
    """FBNet's ``skip`` candidate: identity, or 1×1 conv-BN-ReLU when the width or the
    stride changes."""

    name: ClassVar[str] = "fbnet_skip"
    out_channels: int | Ref = 16
    stride: int | Ref = 1

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("stride")

    def lower(self, emit, x):
        if self.stride == 1 and emit.type(x).shape[0] == self.out_channels:
            return emit(IdentityOp(), x)
        y = emit(Conv2dOp(self.out_channels, 1, self.stride, padding=0), x)
        return emit(ReLUOp(), emit(BatchNormOp(), y))
