"""Combine an op's output with the inputs a bit mask selects (ENAS macro skip bits).

ENAS's controller decides one skip bit per earlier layer. A decision over subsets has
``2^n`` options, too many to list beyond ~16 candidates; :class:`MaskedCombineOp` takes
every candidate as an input and a ``mask`` of 0/1 values (each a value decision), and
reads only the selected inputs when lowered (like :class:`~nasir.ops.CellOutputOp`).

>>> from nasir.types import TensorType
>>> t = TensorType((8, 4, 4))
>>> MaskedCombineOp(mask=(1, 0, 1), reduce="concat").infer((t, t, t, t))
f32[24,4,4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.ops.base import CompositeOp, Ref, register_op
from nasir.ops.primitive import AddOp, ConcatOp, IdentityOp

__all__ = ["MaskedCombineOp"]


@register_op
@dataclass(frozen=True)
class MaskedCombineOp(CompositeOp):
    """The first input plus (``reduce="add"``) or concatenated in depth with
    (``"concat"``) the other inputs whose ``mask`` entry is 1 (``mask[j]`` is input
    ``j + 1``'s bit)."""

    name: ClassVar[str] = "masked_combine"
    arity: ClassVar[int] = -1
    mask: tuple[int | Ref, ...] = ()
    reduce: str = "add"

    def check(self) -> None:
        self._choice("reduce", ("add", "concat"))
        for v in self.mask:
            if not isinstance(v, Ref) and v not in (0, 1):
                raise self._bad("mask", f"must hold 0/1 values, got {v!r}")

    def lower(self, emit, first, *others):
        if len(others) != len(self.mask):
            raise self._fail(f"has {len(self.mask)} mask bits for {len(others)} candidates",
                             tuple(emit.type(x) for x in (first, *others)),
                             hint="give one bit per input after the first")
        picked = [first, *(x for x, bit in zip(others, self.mask) if bit)]
        if len(picked) == 1:
            return emit(IdentityOp(), first)
        return emit(AddOp() if self.reduce == "add" else ConcatOp(), *picked)
