"""Frozen tensor types, checked when created.

Shapes are per sample: the batch dimension is not part of the IR type. A feature map is
``(C, H, W)``, a vector is ``(F,)``.

>>> TensorType((3, 32, 32))
f32[3,32,32]
>>> TensorType((3, -1))
Traceback (most recent call last):
...
nasir.errors.SpecError: tensor dimension must be a positive int, got -1 in shape (3, -1)
  fix:   give every dimension as a positive integer
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field

from nasir.errors import ParseError, SpecError

__all__ = ["DTYPES", "TensorType"]

DTYPES = ("f32", "f16", "bf16", "i64")


_STR: dict[TensorType, str] = {}


@dataclass(frozen=True, slots=True)
class TensorType:
    """The type of a value: a per-sample shape and an element type."""

    shape: tuple[int, ...]
    dtype: str = "f32"
    _h: int = field(init=False, compare=False, repr=False, default=0)

    def __hash__(self) -> int:
        return self._h

    def __post_init__(self) -> None:
        if not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise SpecError(
                    f"tensor dimension must be a positive int, got {d!r} in shape {self.shape}",
                    hint="give every dimension as a positive integer",
                )
        if self.dtype not in DTYPES:
            raise SpecError(
                f"unknown dtype {self.dtype!r}", hint=f"use one of {', '.join(DTYPES)}"
            )
        object.__setattr__(self, "_h", hash((self.shape, self.dtype)))

    @property
    def rank(self) -> int:
        """Number of per-sample dimensions."""
        return len(self.shape)

    @property
    def numel(self) -> int:
        """Elements per sample."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __str__(self) -> str:
        s = _STR.get(self)
        if s is None:
            s = f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"
            if len(_STR) < 100_000:
                _STR[self] = s
        return s

    __repr__ = __str__

    @staticmethod
    def parse(text: str) -> TensorType:
        """Read the text form ``f32[3,32,32]``.

        >>> TensorType.parse("f32[16,8,8]").shape
        (16, 8, 8)
        """
        t = text.strip()
        if "[" not in t or not t.endswith("]"):
            raise ParseError(f"bad tensor type {text!r}", hint="write it like f32[3,32,32]")
        dtype, dims = t[:-1].split("[", 1)
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise ParseError(
                f"bad tensor type {text!r}", hint="dimensions must be integers"
            ) from None
        return TensorType(shape, dtype)

    def to_json(self) -> dict:
        """JSON form."""
        return {"shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(obj: object) -> TensorType:
        """Read the JSON form."""
        if not isinstance(obj, dict) or "shape" not in obj:
            raise ParseError(f"bad tensor type JSON {reprlib.repr(obj)}",
                             hint='use {"shape": [3,32,32]}')
        shape = obj["shape"]
        if not isinstance(shape, list):
            raise ParseError(f"tensor shape must be a list, got {reprlib.repr(shape)}")
        return TensorType(tuple(shape), obj.get("dtype", "f32"))
