"""Grid search: every architecture of a small space, each canonical architecture once.

``order="distinct"`` (default) walks the grid's *distinct architectures* — one
representative (the first in schema order) per canonical hash, found by hashing the whole
grid once per space and process — in a seeded random order, so every distinct network is
equally likely to come early. Walking assignments instead favours architectures with many
equivalent assignments (on NAS-Bench-201: cells cut off by ``none`` edges, whose dead edges
may hold anything), which is what ``order="shuffled"`` (a seeded permutation of the raw
grid) and ``order="schema"`` (schema order, the last decision varying fastest) do; both skip
an architecture equal to one already proposed. When the grid is used up the strategy
raises :class:`SpaceExhausted`.

>>> from nasir.spaces import get_space
>>> g = GridSearch(get_space("nb201"), order="schema")  # all-none and none+skip: both zero
>>> [a["edge_2_3"] for a in g.propose(3)]
['none', 'nor_conv_1x1', 'nor_conv_3x3']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, SpaceExhausted

__all__ = ["GridSearch", "distinct_rows"]

ORDERS = ("distinct", "schema", "shuffled")

#: per space (name + hash of its JSON form): schema-order index rows of one assignment per
#: canonical architecture — hashing a 15,625-cell grid takes seconds, so once per process
_DISTINCT: dict[str, np.ndarray] = {}


def distinct_rows(space: Space) -> np.ndarray:
    """Index rows of the first assignment (schema order) of each canonical architecture.

    >>> from nasir.spaces import get_space
    >>> len(distinct_rows(get_space("nb201")))  # of 15,625 assignments
    6470
    """
    from nasir.passes.hashing import assignment_hash

    blob = json.dumps(space.to_json(), sort_keys=True, default=str).encode()
    key = f"{space.name}:{hashlib.sha256(blob).hexdigest()}"
    if key not in _DISTINCT:
        seen: set[str] = set()
        rows = []
        for a in space.enumerate():
            h = assignment_hash(space, a)
            if h not in seen:
                seen.add(h)
                rows.append(space.indices(a))
        _DISTINCT[key] = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(space.decisions))
    return _DISTINCT[key]


class GridSearch(Strategy):
    """Exhaustive search of a small space (``max_size`` raw assignments at most)."""

    name: ClassVar[str] = "grid"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 order: str = "distinct", dedup: bool = True, max_size: int = 2_000_000) -> None:
        super().__init__(space, seed, objective)
        if order not in ORDERS:
            raise SpecError(f"unknown grid order {order!r}", hint=f"use one of {', '.join(ORDERS)}")
        if space.raw_size > max_size:  # the walk enumerates every raw assignment
            raise SpecError(f"space {space.name} has {space.raw_size:,} assignments, too many for "
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
        if self.order == "distinct":
            rows = distinct_rows(self.space)
            for i in self.rng.permutation(len(rows)):
                yield self.space.from_indices(rows[int(i)])
            return
        sizes = [d.size for d in self.space.decisions]
        for flat in self.rng.permutation(self.space.raw_size):
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
