"""Primitive ops over feature maps with a window or per-channel statistics: 2-D and
depthwise convolution, batch norm, max / average / global average pooling.

>>> from nasir.types import TensorType
>>> op = Conv2dOp(out_channels=8, kernel=3, stride=2)
>>> op.infer((TensorType((4, 8, 8)),))
f32[8,4,4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import Op, Ref, concrete, register_op
from nasir.ops.window import IntOrPair, _check_pair, _spatial, pair, resolve_padding
from nasir.types import TensorType

__all__ = ["AvgPool2dOp", "BatchNormOp", "Conv2dOp", "DepthwiseConv2dOp", "GlobalAvgPoolOp",
           "MaxPool2dOp"]


@register_op
@dataclass(frozen=True)
class Conv2dOp(Op):
    """2-D convolution. ``padding=None`` pads to keep size at stride 1 ("same")."""

    name: ClassVar[str] = "conv2d"
    zero_preserving: ClassVar[bool] = True
    out_channels: int | Ref = 16
    kernel: IntOrPair = 3
    stride: IntOrPair = 1
    padding: IntOrPair | None = None
    dilation: IntOrPair = 1
    groups: int | Ref = 1
    bias: bool = False

    def pads(self) -> tuple[int, int]:
        """The (height, width) padding this op applies (:func:`resolve_padding`)."""
        return resolve_padding(self.kernel, self.dilation, self.padding)

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("groups")
        _check_pair(self, "kernel", 1)
        _check_pair(self, "stride", 1)
        _check_pair(self, "dilation", 1)
        if self.padding is not None:
            _check_pair(self, "padding", 0)
        out, groups = self.out_channels, self.groups  # ints: _pos_int checked them
        if isinstance(out, int) and isinstance(groups, int) and out % groups:
            raise self._bad("groups", f"{self.groups} does not divide out_channels "
                            f"{self.out_channels}")

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        groups, out = self.groups, self.out_channels
        if not (type(groups) is int and type(out) is int):  # hot path: no concrete() calls
            groups, out = concrete(groups), concrete(out)
        if t.shape[0] % groups:
            raise self._fail(
                f"groups={self.groups} does not divide {t.shape[0]} input channels", ins,
                hint="choose channel counts divisible by the group count",
            )
        h, w = _spatial(self, ins, self.kernel, self.stride, self.padding, self.dilation)
        return TensorType((out, h, w), t.dtype)

    def params(self, ins, out):
        kh, kw = pair(self.kernel)
        groups, cout = self.groups, self.out_channels
        if not (type(groups) is int and type(cout) is int):  # hot path: no calls
            groups, cout = concrete(groups), concrete(cout)
        cin = ins[0].shape[0] // groups
        return cout * cin * kh * kw + (cout if self.bias else 0)

    def macs(self, ins, out):
        kh, kw = pair(self.kernel)
        groups = self.groups
        cin = ins[0].shape[0] // (groups if type(groups) is int else concrete(groups))
        return out.numel * cin * kh * kw


@register_op
@dataclass(frozen=True)
class DepthwiseConv2dOp(Op):
    """Depthwise convolution: one filter (times ``multiplier``) per input channel."""

    name: ClassVar[str] = "depthwise_conv2d"
    zero_preserving: ClassVar[bool] = True
    kernel: IntOrPair = 3
    stride: IntOrPair = 1
    padding: IntOrPair | None = None
    dilation: IntOrPair = 1
    multiplier: int = 1
    bias: bool = False

    def pads(self) -> tuple[int, int]:
        """The (height, width) padding this op applies (:func:`resolve_padding`)."""
        return resolve_padding(self.kernel, self.dilation, self.padding)

    def check(self) -> None:
        _check_pair(self, "kernel", 1)
        _check_pair(self, "stride", 1)
        _check_pair(self, "dilation", 1)
        self._pos_int("multiplier")
        if self.padding is not None:
            _check_pair(self, "padding", 0)

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        h, w = _spatial(self, ins, self.kernel, self.stride, self.padding, self.dilation)
        return TensorType((t.shape[0] * self.multiplier, h, w), t.dtype)

    def params(self, ins, out):
        kh, kw = pair(self.kernel)
        return out.shape[0] * kh * kw + (out.shape[0] if self.bias else 0)

    def macs(self, ins, out):
        kh, kw = pair(self.kernel)
        return out.numel * kh * kw


@register_op
@dataclass(frozen=True)
class BatchNormOp(Op):
    """Batch normalisation over channels; ``affine`` adds γ and β (counted as params)."""

    name: ClassVar[str] = "batch_norm"
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True

    def check(self) -> None:
        if not (isinstance(self.eps, float | int) and self.eps > 0):
            raise self._bad("eps", f"must be > 0, got {self.eps!r}")

    def infer(self, ins):
        t = ins[0]
        if t.rank not in (1, 3):
            raise self._fail("expects a feature map or a vector", ins)
        return t

    def params(self, ins, out):
        return 2 * ins[0].shape[0] if self.affine else 0


@register_op
@dataclass(frozen=True)
class MaxPool2dOp(Op):
    """Max pooling; ``stride=None`` means stride = kernel."""

    name: ClassVar[str] = "max_pool2d"
    zero_preserving: ClassVar[bool] = True
    kernel: IntOrPair = 3
    stride: IntOrPair | None = None
    padding: IntOrPair = 0
    ceil_mode: bool = False

    def pads(self) -> tuple[int, int]:
        """The (height, width) padding this op applies."""
        return resolve_padding(self.kernel, 1, self.padding)

    def strides(self) -> tuple[int, int]:
        """The (height, width) stride (the kernel's when ``stride`` is ``None``)."""
        return pair(self.kernel if self.stride is None else self.stride)

    def check(self) -> None:
        _check_pair(self, "kernel", 1)
        _check_pair(self, "padding", 0)
        if self.stride is not None:
            _check_pair(self, "stride", 1)

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        s = self.kernel if self.stride is None else self.stride
        h, w = _spatial(self, ins, self.kernel, s, self.padding, 1, self.ceil_mode)
        return TensorType((t.shape[0], h, w), t.dtype)


@register_op
@dataclass(frozen=True)
class AvgPool2dOp(MaxPool2dOp):
    """Average pooling; ``count_include_pad=False`` averages only real pixels."""

    name: ClassVar[str] = "avg_pool2d"
    count_include_pad: bool = True


@register_op
@dataclass(frozen=True)
class GlobalAvgPoolOp(Op):
    """Mean over H and W; keeps ``C×1×1`` when ``keepdims`` else gives ``(C,)``."""

    name: ClassVar[str] = "global_avg_pool"
    zero_preserving: ClassVar[bool] = True
    keepdims: bool = True

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        shape = (t.shape[0], 1, 1) if self.keepdims else (t.shape[0],)
        return TensorType(shape, t.dtype)
