"""Composite ops: blocks of the NAS literature, lowered to primitives.

The ``expand-composites`` pass calls each op's :meth:`CompositeOp.lower`.

>>> from nasir.types import TensorType
>>> blk = MBConvOp(out_channels=24, kernel=3, stride=2, expand=6)
>>> t = TensorType((16, 56, 56))
>>> out = blk.infer((t,)); out
f32[24,28,28]
>>> blk.params((t,), out)
5136
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.ops.base import CompositeOp, Ref, concrete, register_op
from nasir.ops.primitive import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ConcatOp,
    Conv2dOp,
    CropOp,
    DepthwiseConv2dOp,
    GlobalAvgPoolOp,
    HardSigmoidOp,
    HardSwishOp,
    IdentityOp,
    LinearOp,
    MulOp,
    ReLU6Op,
    ReLUOp,
    SigmoidOp,
    SwishOp,
)

__all__ = [
    "ACTIVATIONS",
    "SKIPS",
    "ConvBNActOp",
    "DilConvOp",
    "FCStackOp",
    "FactorizedReduceOp",
    "MBConvOp",
    "ReLUConvBNOp",
    "ResBlockOp",
    "SepConvOp",
    "SqueezeExciteOp",
    "make_divisible",
    "residual",
]

ACTIVATIONS = {
    "relu": ReLUOp,
    "relu6": ReLU6Op,
    "hardswish": HardSwishOp,
    "swish": SwishOp,
    "sigmoid": SigmoidOp,
    "hardsigmoid": HardSigmoidOp,
}
_ACT_NAMES = (*ACTIVATIONS, "none")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels as MobileNet's reference code does (never more than 10 % down).

    >>> make_divisible(32 * 0.75), make_divisible(72 * 0.25)
    (24, 24)
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _act(emit: Any, x: Any, act: str) -> Any:
    if act == "none":
        return x
    return emit(ACTIVATIONS[act](), x)


#: a block's ``skip`` as a name (``False`` / ``True`` mean ``"none"`` / ``"identity"``)
SKIPS = ("none", "identity", "pool")


def _check_skip(op: Any) -> None:
    if not isinstance(op.skip, bool) and op.skip not in SKIPS:
        raise op._bad("skip", f"must be a bool or one of {list(SKIPS)}, got {op.skip!r}")


def _skip_value(skip: bool | str | Ref) -> bool | str:
    """A block's ``skip`` field with its :class:`Ref` ruled out (:func:`concrete`, which
    would type it ``object``: mypy joins ``bool | str`` when it solves the type variable)."""
    return skip if isinstance(skip, bool | str) else concrete(skip)


def residual(emit: Any, x: Any, y: Any, skip: bool | str, stride: int) -> Any:
    """A block's output ``y`` plus the shortcut from its input ``x`` that ``skip`` names
    (MnasNet's SkipOp, Tan et al. 2019): ``"none"``; ``"identity"``, where the block keeps
    the shape (stride 1, equal widths); ``"pool"``, the identity where it applies and
    otherwise the input average-pooled to the block's stride (3×3, padding not counted)
    and brought to the output width by a 1×1 conv + BN (nasir's reading of the paper's
    "pooling" skip, which neither the paper nor the released code defines further).
    """
    mode = skip if isinstance(skip, str) else ("identity" if skip else "none")
    cin, cout = emit.type(x).shape[0], emit.type(y).shape[0]
    if mode == "none":
        return y
    if stride == 1 and cin == cout:
        return emit(AddOp(), x, y)
    if mode == "identity":
        return y
    if stride > 1:
        x = emit(AvgPool2dOp(3, stride, 1, count_include_pad=False), x)
    if cin != cout:
        x = emit(BatchNormOp(), emit(Conv2dOp(cout, 1), x))
    return emit(AddOp(), x, y)


@register_op
@dataclass(frozen=True)
class ConvBNActOp(CompositeOp):
    """Conv → BatchNorm → activation (``act='none'`` leaves it out)."""

    name: ClassVar[str] = "conv_bn_act"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    groups: int = 1
    act: str | Ref = "relu"
    bn_eps: float = 1e-5

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")
        self._choice("act", _ACT_NAMES)

    def lower(self, emit, x):
        y = emit(Conv2dOp(self.out_channels, self.kernel, self.stride, groups=self.groups), x)
        y = emit(BatchNormOp(eps=self.bn_eps), y)
        return _act(emit, y, concrete(self.act))


@register_op
@dataclass(frozen=True)
class ReLUConvBNOp(CompositeOp):
    """ReLU → Conv → BatchNorm (the NAS-Bench-201 and DARTS convolution edge)."""

    name: ClassVar[str] = "relu_conv_bn"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    dilation: int = 1
    affine: bool = True

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")

    def lower(self, emit, x):
        y = emit(ReLUOp(), x)
        y = emit(Conv2dOp(self.out_channels, self.kernel, self.stride, dilation=self.dilation), y)
        return emit(BatchNormOp(affine=self.affine), y)


@register_op
@dataclass(frozen=True)
class SepConvOp(CompositeOp):
    """DARTS/NASNet separable conv: (ReLU, depthwise k×k, 1×1, BN) twice."""

    name: ClassVar[str] = "sep_conv"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    affine: bool = True

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")

    def lower(self, emit, x):
        cin = emit.type(x).shape[0]
        y = emit(ReLUOp(), x)
        y = emit(DepthwiseConv2dOp(self.kernel, self.stride), y)
        y = emit(Conv2dOp(cin, 1), y)
        y = emit(BatchNormOp(affine=self.affine), y)
        y = emit(ReLUOp(), y)
        y = emit(DepthwiseConv2dOp(self.kernel, 1), y)
        y = emit(Conv2dOp(self.out_channels, 1), y)
        return emit(BatchNormOp(affine=self.affine), y)


@register_op
@dataclass(frozen=True)
class FCStackOp(CompositeOp):
    """Fully connected layers on a vector, each followed by ReLU: one per entry of
    ``widths`` (MetaQNN's FC layers, whose widths are one decision).

    >>> from nasir.types import TensorType
    >>> op = FCStackOp(widths=(512, 256))
    >>> t = TensorType((100,)); op.infer((t,)), op.params((t,), op.infer((t,)))
    (f32[256], 183040)
    """

    name: ClassVar[str] = "fc_stack"
    widths: tuple[int, ...] | Ref = (128,)

    def check(self) -> None:
        if not isinstance(self.widths, tuple) or not self.widths or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise self._bad("widths", f"must be a non-empty tuple of ints >= 1, got "
                                      f"{self.widths!r}")

    def lower(self, emit, x):
        for w in concrete(self.widths):
            x = emit(ReLUOp(), emit(LinearOp(w), x))
        return x


@register_op
@dataclass(frozen=True)
class DilConvOp(CompositeOp):
    """DARTS dilated separable conv: ReLU, dilated depthwise k×k, 1×1, BN."""

    name: ClassVar[str] = "dil_conv"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    dilation: int = 2
    affine: bool = True

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")
        self._pos_int("dilation")

    def lower(self, emit, x):
        y = emit(ReLUOp(), x)
        y = emit(DepthwiseConv2dOp(self.kernel, self.stride, dilation=self.dilation), y)
        y = emit(Conv2dOp(self.out_channels, 1), y)
        return emit(BatchNormOp(affine=self.affine), y)


@register_op
@dataclass(frozen=True)
class FactorizedReduceOp(CompositeOp):
    """Halve resolution with two offset stride-2 1×1 convs, concatenated (DARTS, NASNet)."""

    name: ClassVar[str] = "factorized_reduce"
    out_channels: int | Ref = 16
    affine: bool = True

    def check(self) -> None:
        self._pos_int("out_channels", 2)
        if concrete(self.out_channels) % 2:
            raise self._bad("out_channels", f"must be even, got {self.out_channels}")

    def lower(self, emit, x):
        half = concrete(self.out_channels) // 2
        r = emit(ReLUOp(), x)
        a = emit(Conv2dOp(half, 1, 2, padding=0), r)
        shifted = emit(CropOp(1, 1, 0, 0), r)
        b = emit(Conv2dOp(half, 1, 2, padding=0), shifted)
        y = emit(ConcatOp(), a, b)
        return emit(BatchNormOp(affine=self.affine), y)


@register_op
@dataclass(frozen=True)
class SqueezeExciteOp(CompositeOp):
    """Squeeze-and-excite: pool, 1×1 reduce (bias), act, 1×1 expand (bias), gate, multiply."""

    name: ClassVar[str] = "squeeze_excite"
    squeeze_channels: int | Ref = 8
    act: str = "relu"
    gate: str = "sigmoid"

    def check(self) -> None:
        self._pos_int("squeeze_channels")
        self._choice("act", tuple(ACTIVATIONS))
        self._choice("gate", ("sigmoid", "hardsigmoid"))

    def lower(self, emit, x):
        c = emit.type(x).shape[0]
        s = emit(GlobalAvgPoolOp(), x)
        s = emit(Conv2dOp(self.squeeze_channels, 1, bias=True), s)
        s = _act(emit, s, self.act)
        s = emit(Conv2dOp(c, 1, bias=True), s)
        s = emit(ACTIVATIONS[self.gate](), s)
        return emit(MulOp(), x, s)


@register_op
@dataclass(frozen=True)
class MBConvOp(CompositeOp):
    """Mobile inverted bottleneck (MobileNetV2/MnasNet/EfficientNet/MobileNetV3).

    1×1 expand (left out when the expanded width equals the input), depthwise k×k,
    optional squeeze-excite, 1×1 project, residual when ``skip`` and shapes allow
    (``skip="pool"``: MnasNet's pooling skip, see :func:`residual`).

    SE width: ``se_base='input'`` uses ``int(C_in · se_ratio)`` (MnasNet, EfficientNet);
    ``'expanded'`` uses ``make_divisible(C_mid · se_ratio, se_divisor)`` (MobileNetV3).
    ``expand_channels`` fixes the expanded width directly (MobileNetV3's tables).
    ``bn_eps`` is the epsilon of the block's three BatchNorms (torchvision's MobileNetV3
    uses 1e-3).
    """

    name: ClassVar[str] = "mbconv"
    out_channels: int | Ref = 16
    kernel: int | Ref = 3
    stride: int | Ref = 1
    expand: float | Ref = 6
    se_ratio: float | Ref = 0.0
    act: str | Ref = "relu"
    skip: bool | str | Ref = True
    se_base: str = "input"
    se_act: str = "relu"
    se_gate: str = "sigmoid"
    se_divisor: int = 8
    expand_channels: int | None = None
    bn_eps: float = 1e-5

    def check(self) -> None:
        self._pos_int("out_channels")
        self._pos_int("kernel")
        self._pos_int("stride")
        self._choice("act", tuple(ACTIVATIONS))
        _check_skip(self)
        self._choice("se_base", ("input", "expanded"))
        if not (isinstance(self.bn_eps, float | int) and self.bn_eps > 0):
            raise self._bad("bn_eps", f"must be > 0, got {self.bn_eps!r}")
        if not isinstance(self.expand, int | float) or self.expand < 1:
            raise self._bad("expand", f"must be a number >= 1, got {self.expand!r}")
        if not isinstance(self.se_ratio, int | float) or not 0 <= self.se_ratio < 1:
            raise self._bad("se_ratio", f"must be in [0, 1), got {self.se_ratio!r}")

    def mid_channels(self, cin: int) -> int:
        """Expanded width for ``cin`` input channels."""
        if self.expand_channels is not None:
            return self.expand_channels
        expand = self.expand
        return round(cin * (expand if not isinstance(expand, Ref) else concrete(expand)))

    def lower(self, emit, x):
        cin = emit.type(x).shape[0]
        mid = self.mid_channels(cin)
        # fields read once, Refs ruled out without a call each (shape inference runs this)
        act, se_ratio, stride = self.act, self.se_ratio, self.stride
        if isinstance(act, Ref) or isinstance(se_ratio, Ref) or isinstance(stride, Ref):
            act, se_ratio, stride = concrete(act), concrete(se_ratio), concrete(stride)
        y = x
        if mid != cin:
            y = emit(Conv2dOp(mid, 1), y)
            y = emit(BatchNormOp(eps=self.bn_eps), y)
            y = _act(emit, y, act)
        y = emit(DepthwiseConv2dOp(self.kernel, self.stride, multiplier=1), y)
        y = emit(BatchNormOp(eps=self.bn_eps), y)
        y = _act(emit, y, act)
        if se_ratio > 0:
            if self.se_base == "input":
                sq = max(1, int(cin * se_ratio))
            else:
                sq = make_divisible(mid * se_ratio, self.se_divisor)
            y = emit(SqueezeExciteOp(sq, self.se_act, self.se_gate), y)
        y = emit(Conv2dOp(self.out_channels, 1), y)
        y = emit(BatchNormOp(eps=self.bn_eps), y)
        return residual(emit, x, y, _skip_value(self.skip), stride)


@register_op
@dataclass(frozen=True)
class ResBlockOp(CompositeOp):
    """NAS-Bench-201 residual block: two ReLU-Conv-BN 3×3 and a pooled 1×1 shortcut."""

    name: ClassVar[str] = "res_block"
    out_channels: int | Ref = 32
    stride: int | Ref = 2

    def check(self) -> None:
        self._pos_int("out_channels")
        self._choice("stride", (1, 2))

    def lower(self, emit, x):
        cin = emit.type(x).shape[0]
        a = emit(ReLUConvBNOp(self.out_channels, 3, self.stride), x)
        b = emit(ReLUConvBNOp(self.out_channels, 3, 1), a)
        if self.stride == 2:
            s = emit(AvgPool2dOp(2, 2, 0), x)
            s = emit(Conv2dOp(self.out_channels, 1, padding=0), s)
        elif cin != self.out_channels:
            s = emit(ReLUConvBNOp(self.out_channels, 1, 1), x)
        else:
            s = emit(IdentityOp(), x)
        return emit(AddOp(), s, b)
