"""Choice-point ops that only appear in search spaces; instantiation removes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.errors import VerifyError
from nasir.ops.base import Op, register_op

__all__ = ["ArgOp", "ChooseOp", "RepeatOp", "SelectOp"]


class _SpaceOnly(Op):
    def infer(self, ins):
        raise VerifyError(
            f"{self.name} is a choice point of a search space and has no type",
            hint="instantiate the space with an assignment first",
        )


@register_op
@dataclass(frozen=True)
class ArgOp(_SpaceOnly):
    """Operand ``index`` of the region it sits in."""

    name: ClassVar[str] = "arg"
    arity: ClassVar[int] = 0
    index: int = 0


@register_op
@dataclass(frozen=True)
class ChooseOp(_SpaceOnly):
    """Op choice: run the region named by decision ``label`` on the operands."""

    name: ClassVar[str] = "choose"
    arity: ClassVar[int] = -1
    label: str = ""


@register_op
@dataclass(frozen=True)
class RepeatOp(_SpaceOnly):
    """Depth choice: region ``first`` once, then ``rest`` (or ``first``) n-1 more times."""

    name: ClassVar[str] = "repeat"
    label: str = ""


@register_op
@dataclass(frozen=True)
class SelectOp(_SpaceOnly):
    """Input choice: pick ``k`` of the operands; several are combined with ``reduce``
    (``pad_concat``: :class:`~nasir.ops.PadConcatOp`, NAS-RL's anchors)."""

    name: ClassVar[str] = "select"
    arity: ClassVar[int] = -1
    label: str = ""
    k: int = 1
    reduce: str = "add"

    def check(self) -> None:
        self._pos_int("k")
        self._choice("reduce", ("add", "concat", "pad_concat"))
