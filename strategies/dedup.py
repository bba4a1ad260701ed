"""Bookkeeping of architectures a strategy has already proposed, by canonical hash.

The query convention shared by nasir's strategies: a query is one evaluation of a
*distinct* architecture (distinct canonical hash, :func:`nasir.passes.hashing.assignment_hash`).
A strategy therefore avoids proposing an architecture it has proposed before; when it
cannot find a new one within a bounded number of tries it falls back to something new
(or, if the space is exhausted, repeats one, which an evaluator answers from its cache).

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> seen = SeenArchitectures(sp)
>>> a = sp.reference("resnet")
>>> seen.add(a), seen.add(a.replace(edge_1_3="none")), seen.add(a.replace(edge_0_3="nor_conv_1x1"))
(True, False, True)
>>> seen.record(a, 0.9); seen.known(a.replace(edge_1_3="none"))
0.9
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nasir.errors import NasirError
from nasir.passes.hashing import assignment_hash
from nasir.space import Assignment, Space

__all__ = ["SeenArchitectures", "SpaceExhausted", "fresh_sample"]


class SeenArchitectures:
    """Canonical hashes proposed so far, and the score known for each evaluated one."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self._proposed: set[str] = set()
        self._score: dict[str, float] = {}
        self._memo: dict[Assignment, str] = {}

    def key(self, a: Mapping[str, Any]) -> str:
        """The canonical hash of ``a`` (memoised per assignment)."""
        if not isinstance(a, Assignment):
            return assignment_hash(self.space, a)
        h = self._memo.get(a)
        if h is None:
            h = self._memo[a] = assignment_hash(self.space, a)
        return h

    def __contains__(self, a: Mapping[str, Any]) -> bool:
        return self.key(a) in self._proposed

    def __len__(self) -> int:
        return len(self._proposed)

    def add(self, a: Mapping[str, Any]) -> bool:
        """Mark ``a`` proposed; ``True`` when it is new."""
        h = self.key(a)
        if h in self._proposed:
            return False
        self._proposed.add(h)
        return True

    def record(self, a: Mapping[str, Any], score: float) -> None:
        """Remember the score of an evaluated architecture (also marks it proposed)."""
        h = self.key(a)
        self._proposed.add(h)
        self._score[h] = float(score)

    def known(self, a: Mapping[str, Any]) -> float | None:
        """The score of ``a`` (or an equivalent architecture) if it was evaluated."""
        return self._score.get(self.key(a))


class SpaceExhausted(NasirError):
    """A strategy found no architecture it has not proposed before (small space used up)."""


def fresh_sample(space: Space, seen: SeenArchitectures, rng: np.random.Generator,
                 tries: int = 1000) -> Assignment:
    """A uniform sample not proposed before (marked proposed), the fallback every strategy
    uses when its own proposals keep repeating; :class:`SpaceExhausted` after ``tries``."""
    from nasir.passes.sampling import ConstrainedSampler, UniformSampler

    cache = space.memo("fresh_sampler", lambda: ConstrainedSampler(space)
                       if space.constraints else UniformSampler(space))
    for _ in range(tries):
        a = cache.sample(rng, 1)[0]
        if seen.add(a):
            a.provenance = {**a.provenance, "fallback": "uniform"}
            return a
    raise SpaceExhausted(f"no new architecture of {space.name} found in {tries} samples",
                         hint="the space looks used up: stop the search or raise the budget "
                              "of tries")
