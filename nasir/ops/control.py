"""Choice-point ops that only appear in search spaces; instantiation removes them."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.errors import VerifyError
from nasir.ops.base import Op, register_op

__all__ = ["ArgOp", "ChooseOp", "RepeatOp", "SelectOp"]


class _SpaceOnly(Op):
    space_only: ClassVar[bool] = True

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
    """Depth choice: region ``first`` once, then ``rest`` (or ``first``) n-1 more times.

    A body that takes the repetition index has one region per index instead, keyed
    ``"0"``, ``"1"``, … up to the largest count: repetition ``i`` runs region ``"i"``.
    :meth:`region_for` is the one place that says which region a repetition runs.

    >>> RepeatOp.region_for({"first": "F", "rest": "R"}, 0), RepeatOp.region_for(
    ...     {"first": "F", "rest": "R"}, 2), RepeatOp.region_for({"0": "A", "1": "B"}, 1)
    ('F', 'R', 'B')
    """

    name: ClassVar[str] = "repeat"
    label: str = ""

    @staticmethod
    def region_for(regions: Mapping[str, Any], i: int) -> Any:
        """The region that repetition ``i`` (0-based) runs, given a repeat node's regions."""
        r = regions.get(str(i))
        if r is not None:
            return r
        if i > 0 and "rest" in regions:
            return regions["rest"]
        return regions["first"]

    @staticmethod
    def indexed(regions: Container[str]) -> bool:
        """Whether the regions are one per repetition index (the body took the index)."""
        return "first" not in regions


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
