"""Grid search: every architecture of a small space, each canonical architecture once.

``order="schema"`` walks the space in schema order (the last decision varies fastest);
``order="shuffled"`` walks a seeded permutation of the grid (sampling without
replacement). Architectures equal to one already proposed (same canonical hash) are
skipped; when the grid is used up the strategy raises :class:`SpaceExhausted`.

>>> from nasir.spaces import get_space
>>> g = GridSearch(get_space("nb201"))  # all-none and none+skip: both compute zero
>>> [a["edge_2_3"] for a in g.propose(3)]
['none', 'nor_conv_1x1', 'nor_conv_3x3']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, SpaceExhausted

__all__ = ["GridSearch"]

ORDERS = ("schema", "shuffled")


class GridSearch(Strategy):
    """Exhaustive search of a small space (``max_size`` assignments at most)."""

    name: ClassVar[str] = "grid"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 order: str = "schema", dedup: bool = True, max_size: int = 2_000_000) -> None:
        super().__init__(space, seed, objective)
        if order not in ORDERS:
            raise SpecError(f"unknown grid order {order!r}", hint=f"use one of {', '.join(ORDERS)}")
        if space.size > max_size:
            raise SpecError(f"space {space.name} has {space.size:,} assignments, too many for "
                            f"grid search (max_size={max_size:,})",
                            hint="use random search or evolution, or raise max_size")
        self.order = order
        self.dedup = dedup
        self.seen = SeenArchitectures(space)
        self._it = self._walk()

    def _walk(self) -> Iterator[Assignment]:
        if self.order == "schema":
            yield from self.space.enumerate()
            return
        sizes = [d.size for d in self.space.decisions]
        for flat in self.rng.permutation(self.space.size):
            yield self.space.from_indices(np.unravel_index(int(flat), sizes))

    def _propose(self, n: int) -> list[Assignment]:
        out: list[Assignment] = []
        for a in self._it:
            if not self.dedup or self.seen.add(a):
                a.provenance = {"grid": self.order}
                out.append(a)
                if len(out) == n:
                    return out
        if out:
            return out
        raise SpaceExhausted(f"grid search has proposed every architecture of {self.space.name}",
                             hint="the search is complete")

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        return None
