"""Zero padding, and the NAS-RL concatenation of inputs of different sizes.

Zoph & Le (2017): "if input layers do not have the same size, we pad the small layers
with zeros so that the concatenated layers have the same sizes". :class:`PadOp` is the
primitive (backends lower it); :class:`PadConcatOp` pads every input at the bottom and
right to the largest height and width among them, then concatenates in depth.

>>> from nasir.types import TensorType
>>> PadOp(bottom=2, right=1).infer((TensorType((4, 5, 5)),))
f32[4,7,6]
>>> PadConcatOp().infer((TensorType((4, 8, 8)), TensorType((6, 3, 4))))
f32[10,8,8]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import CompositeOp, Op, register_op
from nasir.ops.primitive import ConcatOp, IdentityOp
from nasir.types import TensorType

__all__ = ["PadConcatOp", "PadOp"]


@register_op
@dataclass(frozen=True)
class PadOp(Op):
    """Add rows/columns of zeros at the borders of a feature map."""

    name: ClassVar[str] = "pad"
    zero_preserving: ClassVar[bool] = True
    top: int = 0
    left: int = 0
    bottom: int = 0
    right: int = 0

    def check(self) -> None:
        for f in ("top", "left", "bottom", "right"):
            self._pos_int(f, 0)

    def infer(self, ins):
        t = self._want_rank(ins, 3)
        return TensorType((t.shape[0], t.shape[1] + self.top + self.bottom,
                           t.shape[2] + self.left + self.right), t.dtype)


@register_op
@dataclass(frozen=True)
class PadConcatOp(CompositeOp):
    """Concatenate feature maps in depth after zero-padding each (bottom, right) to the
    largest height and width among the inputs (NAS-RL's anchors at different strides)."""

    name: ClassVar[str] = "pad_concat"
    arity: ClassVar[int] = -1

    @staticmethod
    def pads(sizes: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
        """The (bottom, right) zero padding that brings each (height, width) in ``sizes``
        to the largest height and width among them (the rule, shared with the torch
        supernet's mixed ``pad_concat`` choices).

        >>> PadConcatOp.pads([(8, 8), (4, 6)])
        [(0, 0), (4, 2)]
        """
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        return [(h - s[0], w - s[1]) for s in sizes]

    def lower(self, emit, *xs):
        shapes = [emit.type(x).shape for x in xs]
        if any(len(s) != 3 for s in shapes):
            raise self._fail("expects feature maps C×H×W",
                             tuple(emit.type(x) for x in xs))
        parts = [x if (b, r) == (0, 0) else emit(PadOp(bottom=b, right=r), x)
                 for x, (b, r) in zip(xs, self.pads([s[1:] for s in shapes]))]
        if len(parts) == 1:
            return emit(IdentityOp(), parts[0])
        return emit(ConcatOp(), *parts)
