"""Random search: uniform (or constrained) samples through the shared sampling pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nasir.passes.sampling import ConstrainedSampler, UniformSampler
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Uniform random search; ``bounds`` (e.g. ``{"macs": 3e8}``) switch to constrained
    sampling, ``dedup`` skips architectures with a canonical hash already proposed."""

    name: ClassVar[str] = "random"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 bounds: Mapping[str, float] | None = None, dedup: bool = True) -> None:
        super().__init__(space, seed, objective)
        self.sampler = (ConstrainedSampler(space, bounds) if bounds or space.constraints
                        else UniformSampler(space))
        self.dedup = dedup
        self._seen: set[str] = set()

    def _propose(self, n: int) -> list[Assignment]:
        from nasir.passes.hashing import assignment_hash

        out: list[Assignment] = []
        tries = 0
        while len(out) < n:
            a = self.sampler.sample(self.rng, 1)[0]
            tries += 1
            if self.dedup and tries < 100 * n:
                h = assignment_hash(self.space, a)
                if h in self._seen:
                    continue
                self._seen.add(h)
            out.append(a)
        return out

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        return None
