"""Primitive ops without a window: the graph input, the activations (one elementwise class
each), merges (add, concat, mul), linear, dropout, flatten and crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import Op, Ref, concrete, register_op
from nasir.types import TensorType

__all__ = ["AddOp", "ConcatOp", "CropOp", "DropoutOp", "FlattenOp", "HardSigmoidOp",
           "HardSwishOp", "IdentityOp", "InputOp", "LinearOp", "MulOp", "ReLU6Op", "ReLUOp",
           "SigmoidOp", "SwishOp", "ZeroOp"]


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


@dataclass(frozen=True)
class _Elementwise(Op):
    def infer(self, ins):
        return ins[0]


def _act(cls_name: str, opname: str, zp: bool, doc: str) -> type[Op]:
    """A registered elementwise op class; ``cls_name`` is the name the module binds it to,
    so pickle finds the class (ops and graphs travel to workers by pickle)."""
    cls = type(
        cls_name,
        (_Elementwise,),
        {"name": opname, "zero_preserving": zp, "__doc__": doc, "__module__": __name__},
    )
    cls = dataclass(frozen=True)(cls)
    return register_op(cls)


ReLUOp = _act("ReLUOp", "relu", True, "max(x, 0)")
ReLU6Op = _act("ReLU6Op", "relu6", True, "min(max(x, 0), 6)")
HardSwishOp = _act("HardSwishOp", "hardswish", True, "x · relu6(x + 3) / 6 (MobileNetV3)")
SwishOp = _act("SwishOp", "swish", True, "x · sigmoid(x) (SiLU)")
SigmoidOp = _act("SigmoidOp", "sigmoid", False, "1 / (1 + exp(-x))")
HardSigmoidOp = _act("HardSigmoidOp", "hardsigmoid", False, "relu6(x + 3) / 6")
IdentityOp = _act("IdentityOp", "identity", True, "returns its input (a skip connection)")
ZeroOp = _act("ZeroOp", "zero", True,
              "all zeros of the input's type (the 'none' op of cell spaces)")


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
        return TensorType((concrete(self.out_features),), t.dtype)

    def params(self, ins, out):
        n = concrete(self.out_features)
        return ins[0].shape[0] * n + (n if self.bias else 0)

    def macs(self, ins, out):
        return ins[0].shape[0] * concrete(self.out_features)


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
