"""Regularized (aging) evolution, Real et al., "Regularized Evolution for Image Classifier
Architecture Search" (AAAI 2019).

The first ``population`` proposals are uniform samples. After that every proposal is a
child: draw ``sample`` members of the population uniformly at random (without
replacement), take the best, mutate it with the shared mutation pass
(:func:`nasir.passes.mutation.mutate`). Every evaluated child joins the population and the
*oldest* member leaves (aging), whatever its score.

Paper defaults: population 100, sample 25 (their CIFAR-10 runs). For a budget of a few
hundred queries a smaller population is better (see ``benchmarks/README.md``).

Queries: a child whose canonical architecture was already proposed is not proposed again;
the parent is mutated again (``retries`` times per tournament, then a new tournament),
and after ``max_tries`` duplicates in a row a fresh uniform sample is proposed instead.

>>> from nasir.spaces import get_space
>>> s = RegularizedEvolution(get_space("nb201"), seed=0, population=4, sample=2)
>>> for k, a in enumerate(s.propose(4)):
...     s.feedback(a, {"accuracy": 0.5 + k / 10})
>>> child = s.propose(1)[0]
>>> child.provenance["mutation"]
'op'
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from nasir.errors import SpecError
from nasir.passes.mutation import mutate
from nasir.passes.sampling import ConstrainedSampler, UniformSampler
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, fresh_sample

__all__ = ["RegularizedEvolution"]


class RegularizedEvolution(Strategy):
    """Aging evolution with tournament selection (population ``P``, sample ``S``)."""

    name: ClassVar[str] = "regularized_evolution"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 population: int = 100, sample: int = 25, retries: int = 10,
                 max_tries: int = 100, dedup: bool = True) -> None:
        super().__init__(space, seed, objective)
        if population < 1 or not 1 <= sample <= population:
            raise SpecError(f"regularized evolution needs population >= 1 and "
                            f"1 <= sample <= population, got P={population}, S={sample}",
                            hint="e.g. population=100, sample=25 (the paper's)")
        self.population_size = int(population)
        self.sample_size = int(sample)
        self.retries = max(1, int(retries))
        self.max_tries = max(1, int(max_tries))
        self.dedup = dedup
        self.sampler = ConstrainedSampler(space) if space.constraints else UniformSampler(space)
        self.seen = SeenArchitectures(space)
        self.population: deque[tuple[Assignment, float]] = deque()
        self._proposed = 0

    def _new(self, a: Assignment) -> bool:
        return self.seen.add(a) if self.dedup else True

    def _random(self) -> Assignment:
        for _ in range(self.max_tries):
            a = self.sampler.sample(self.rng, 1)[0]
            if self._new(a):
                return a
        return fresh_sample(self.space, self.seen, self.rng)

    def _child(self) -> Assignment:
        tries = 0
        while tries < self.max_tries:
            k = min(self.sample_size, len(self.population))
            picks = self.rng.choice(len(self.population), size=k, replace=False)
            parent = max((self.population[int(i)] for i in picks), key=lambda m: m[1])[0]
            for _ in range(self.retries):
                tries += 1
                child = mutate(self.space, parent, self.rng)
                if self._new(child):
                    return child
        return fresh_sample(self.space, self.seen, self.rng)

    def _propose(self, n: int) -> list[Assignment]:
        out = []
        for _ in range(n):
            warmup = self._proposed < self.population_size or not self.population
            out.append(self._random() if warmup else self._child())
            self._proposed += 1
        return out

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        self.seen.record(a, self.score(metrics))
        self.population.append((a, self.score(metrics)))
        while len(self.population) > self.population_size:
            self.population.popleft()
