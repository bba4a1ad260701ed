"""Searchable layer blocks that combine a conv op with optional SE and residual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import CompositeOp, Ref, concrete, register_op
from nasir.ops.composite import (
    ACTIVATIONS,
    SqueezeExciteOp,
    _check_skip,
    _skip_value,
    residual,
)
from nasir.ops.primitive import BatchNormOp, Conv2dOp

__all__ = ["ConvBlockOp"]


@register_op
@dataclass(frozen=True)
class ConvBlockOp(CompositeOp):
    """Regular k×k conv → BN → act, optional SE (width ``int(C_in·se_ratio)``), and a
    residual when ``skip`` and shapes allow (MnasNet's "conv" ConvOp; ``skip="pool"``:
    the pooling skip of :func:`~nasir.ops.composite.residual`)."""

    name: ClassVar[str] = "conv_block"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    se_ratio: float | Ref = 0.0
    act: str | Ref = "relu"
    skip: bool | str | Ref = True

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")
        self._choice("act", tuple(ACTIVATIONS))
        _check_skip(self)

    def lower(self, emit, x):
        cin = emit.type(x).shape[0]
        y = emit(Conv2dOp(self.out_channels, self.kernel, self.stride), x)
        y = emit(BatchNormOp(), y)
        y = emit(ACTIVATIONS[concrete(self.act)](), y)
        se_ratio = concrete(self.se_ratio)
        if se_ratio > 0:
            y = emit(SqueezeExciteOp(max(1, int(cin * se_ratio))), y)
        return residual(emit, x, y, _skip_value(self.skip), concrete(self.stride))
