"""Primitive ops: the ones backends lower directly.

>>> from nasir.types import TensorType
>>> t = TensorType((32, 8, 8))
>>> op = DepthwiseConv2dOp(kernel=3)
>>> op.infer((t,)), op.params((t,), op.infer((t,))), op.macs((t,), op.infer((t,)))
(f32[32,8,8], 288, 18432)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import Op, Ref, register_op
from nasir.types import TensorType

__all__ = [
    "AddOp",
    "AvgPool2dOp",
    "BatchNormOp",
    "ConcatOp",
    "Conv2dOp",
    "CropOp",
    "DepthwiseConv2dOp",
    "DropoutOp",
    "FlattenOp",
    "GlobalAvgPoolOp",
    "HardSigmoidOp",
    "HardSwishOp",
    "IdentityOp",
    "InputOp",
    "LinearOp",
    "MaxPool2dOp",
    "MulOp",
    "ReLU6Op",
    "ReLUOp",
    "SigmoidOp",
    "SwishOp",
    "ZeroOp",
    "conv_out",
    "pair",
    "resolve_padding",
]

IntOrPair = int | tuple[int, int] | Ref


def pair(v: object) -> tuple[int, int]:
    """``3 -> (3, 3)``; a 2-tuple is returned as is."""
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))  # type: ignore[call-overload]


def conv_out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of a convolution or pooling window along one axis."""
    num = size + 2 * p - d * (k - 1) - 1
    if ceil:
        return -(-num // s) + 1
    return num // s + 1


def _check_pair(op: Op, field: str, minimum: int) -> None:
    v = getattr(op, field)
    vals = v if isinstance(v, tuple) else (v,)
    if isinstance(v, tuple) and len(v) != 2:
        raise op._bad(field, f"must be an int or a pair of ints, got {v!r}")
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
            raise op._bad(field, f"must be an int >= {minimum} or a pair of them, got {v!r}")


def resolve_padding(kernel: IntOrPair, dilation: IntOrPair,
                    padding: IntOrPair | None) -> tuple[int, int]:
    """The (height, width) padding of a window op: ``padding`` as given, or for ``None``
    the padding that keeps the size at stride 1 ("same", ``dilation·(kernel−1)//2``) —
    the one rule every backend and the shape inference use.

    >>> resolve_padding(3, 1, None), resolve_padding((5, 3), 2, None), resolve_padding(3, 1, 0)
    ((1, 1), (4, 2), (0, 0))
    """
    if padding is not None:
        return pair(padding)
    kh, kw = pair(kernel)
    dh, dw = pair(dilation)
    return (dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2


def _spatial(op: Op, ins: tuple[TensorType, ...], k, s, p, d, ceil=False) -> tuple[int, int]:
    t = op._want_rank(ins, 3)
    kh, kw = pair(k)
    sh, sw = pair(s)
    dh, dw = pair(d)
    ph, pw = resolve_padding(k, d, p)
    h = conv_out(t.shape[1], kh, sh, ph, dh, ceil)
    w = conv_out(t.shape[2], kw, sw, pw, dw, ceil)
    if h < 1 or w < 1:
        raise op._fail(
            f"window {kh}x{kw} stride {sh} leaves no output on a {t.shape[1]}x{t.shape[2]} map",
            ins,
            hint="use a larger input resolution or fewer stride-2 layers",
        )
    return h, w


@register_op
@dataclass(frozen=True)
class InputOp(Op):
    """A graph input of a given per-sample shape."""

    name: ClassVar[str] = "input"
    arity: ClassVar[int] = 0
    shape: tuple[int, ...] = (3, 32, 32)
    dtype: str = "f32"

    def check(self) -> None:
        TensorType(tuple(self.shape), self.dtype)

    def infer(self, ins):
        return TensorType(tuple(self.shape), self.dtype)


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
        if self.out_channels % self.groups:  # type: ignore[operator]
            raise self._bad("groups", f"{self.groups} does not divide out_channels "
                            f"{self.out_channels}")

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        if t.shape[0] % self.groups:  # type: ignore[operator]
            raise self._fail(
                f"groups={self.groups} does not divide {t.shape[0]} input channels", ins,
                hint="choose channel counts divisible by the group count",
            )
        h, w = _spatial(self, ins, self.kernel, self.stride, self.padding, self.dilation)
        return TensorType((self.out_channels, h, w), t.dtype)  # type: ignore[arg-type]

    def params(self, ins, out):
        kh, kw = pair(self.kernel)
        cin = ins[0].shape[0] // self.groups  # type: ignore[operator]
        return self.out_channels * cin * kh * kw + (self.out_channels if self.bias else 0)  # type: ignore[operator]

    def macs(self, ins, out):
        kh, kw = pair(self.kernel)
        cin = ins[0].shape[0] // self.groups  # type: ignore[operator]
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


@dataclass(frozen=True)
class _Elementwise(Op):
    def infer(self, ins):
        return ins[0]


def _act(opname: str, zp: bool, doc: str) -> type[Op]:
    cls = type(
        "".join(p.capitalize() for p in opname.split("_")) + "Op",
        (_Elementwise,),
        {"name": opname, "zero_preserving": zp, "__doc__": doc, "__module__": __name__},
    )
    cls = dataclass(frozen=True)(cls)
    return register_op(cls)


ReLUOp = _act("relu", True, "max(x, 0)")
ReLU6Op = _act("relu6", True, "min(max(x, 0), 6)")
HardSwishOp = _act("hardswish", True, "x · relu6(x + 3) / 6 (MobileNetV3)")
SwishOp = _act("swish", True, "x · sigmoid(x) (SiLU)")
SigmoidOp = _act("sigmoid", False, "1 / (1 + exp(-x))")
HardSigmoidOp = _act("hardsigmoid", False, "relu6(x + 3) / 6")
IdentityOp = _act("identity", True, "returns its input (a skip connection)")
ZeroOp = _act("zero", True, "all zeros of the input's type (the 'none' op of cell spaces)")


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


@register_op
@dataclass(frozen=True)
class AddOp(Op):
    """Elementwise sum of two or more inputs of one type."""

    name: ClassVar[str] = "add"
    arity: ClassVar[int] = -1
    zero_preserving: ClassVar[bool] = True
    commutative: ClassVar[bool] = True

    def infer(self, ins):
        for t in ins[1:]:
            if t != ins[0]:
                raise self._fail("inputs must have one type", ins,
                                 hint="match channels and strides of the summed branches")
        return ins[0]


@register_op
@dataclass(frozen=True)
class ConcatOp(Op):
    """Concatenation along channels of inputs with equal spatial size."""

    name: ClassVar[str] = "concat"
    arity: ClassVar[int] = -1
    zero_preserving: ClassVar[bool] = True

    def infer(self, ins):
        first = ins[0]
        for t in ins[1:]:
            if t.rank != first.rank or t.shape[1:] != first.shape[1:] or t.dtype != first.dtype:
                raise self._fail("inputs must agree in all but the channel dimension", ins)
        return TensorType((sum(t.shape[0] for t in ins), *first.shape[1:]), first.dtype)


@register_op
@dataclass(frozen=True)
class MulOp(Op):
    """Elementwise product; the second input may be ``C×1×1`` (squeeze-excite gating)."""

    name: ClassVar[str] = "mul"
    arity: ClassVar[int] = 2
    zero_preserving: ClassVar[bool] = True

    def infer(self, ins):
        a, b = ins
        if b != a and not (b.rank == 3 and a.rank == 3 and b.shape == (a.shape[0], 1, 1)):
            raise self._fail("second input must match the first or be C×1×1", ins)
        return a


@register_op
@dataclass(frozen=True)
class LinearOp(Op):
    """Fully connected layer on a vector."""

    name: ClassVar[str] = "linear"
    out_features: int | Ref = 10
    bias: bool = True

    def check(self) -> None:
        self._pos_int("out_features")

    def infer(self, ins):
        t = self._want_rank(ins, 1)
        return TensorType((self.out_features,), t.dtype)  # type: ignore[arg-type]

    def params(self, ins, out):
        return ins[0].shape[0] * self.out_features + (self.out_features if self.bias else 0)  # type: ignore[operator]

    def macs(self, ins, out):
        return ins[0].shape[0] * self.out_features  # type: ignore[operator]


@register_op
@dataclass(frozen=True)
class DropoutOp(Op):
    """Dropout with probability ``p`` while training; identity at inference."""

    name: ClassVar[str] = "dropout"
    zero_preserving: ClassVar[bool] = True
    p: float | Ref = 0.0

    def check(self) -> None:
        if not isinstance(self.p, float | int) or not 0.0 <= self.p < 1.0:
            raise self._bad("p", f"must be in [0, 1), got {self.p!r}")

    def infer(self, ins):
        return ins[0]


@register_op
@dataclass(frozen=True)
class FlattenOp(Op):
    """Flatten a per-sample tensor to a vector."""

    name: ClassVar[str] = "flatten"
    zero_preserving: ClassVar[bool] = True

    def infer(self, ins):
        return TensorType((ins[0].numel,), ins[0].dtype)


@register_op
@dataclass(frozen=True)
class CropOp(Op):
    """Drop rows/columns at the borders (DARTS' factorized reduce shifts by one pixel)."""

    name: ClassVar[str] = "crop"
    zero_preserving: ClassVar[bool] = True
    top: int = 1
    left: int = 1
    bottom: int = 0
    right: int = 0

    def check(self) -> None:
        for f in ("top", "left", "bottom", "right"):
            self._pos_int(f, 0)

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        h = t.shape[1] - self.top - self.bottom
        w = t.shape[2] - self.left - self.right
        if h < 1 or w < 1:
            raise self._fail("crop removes the whole map", ins)
        return TensorType((t.shape[0], h, w), t.dtype)
