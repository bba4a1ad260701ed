"""Sampling passes on assignments, guided by the decision schema.

Every sampler takes a seeded ``numpy.random.Generator``: same seed, same stream.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> s = UniformSampler(sp)
>>> a1 = s.sample(np.random.default_rng(0), 3)
>>> a1 == s.sample(np.random.default_rng(0), 3)
True
>>> c = ConstrainedSampler(sp, {"macs": 1.0})
>>> c.sample(np.random.default_rng(0), 1)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nasir.errors.ConstraintError: no architecture of nb201 meets macs <= 1 (the smallest ...
  fix:   raise the bound above 7,783,040 or change the space
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.errors import ConstraintError, SpecError
from nasir.space import Assignment, Space

__all__ = ["ConstrainedSampler", "UniformSampler", "metric_of", "sample"]

MetricFn = Callable[[Space, Assignment], float]


def _analysis_metric(key: str) -> MetricFn:
    def fn(space: Space, a: Assignment) -> float:
        from nasir.passes.analysis import analyze

        return float(analyze(space.instantiate(a))[key])

    return fn


#: metrics the constrained sampler knows without help; ``latency_ms`` needs a predictor
METRICS: dict[str, MetricFn] = {
    "macs": _analysis_metric("macs"),
    "params": _analysis_metric("params"),
    "activation_bytes": _analysis_metric("activation_bytes"),
}


def metric_of(name: str, extra: Mapping[str, MetricFn] | None = None) -> MetricFn:
    """The metric function called ``name`` (``extra`` adds e.g. a latency predictor)."""
    table = {**METRICS, **(extra or {})}
    if name not in table:
        raise SpecError(f"unknown constraint metric {name!r}",
                        hint=f"known: {', '.join(sorted(table))}; pass a predictor for "
                             "latency_ms (e.g. a LUT) through metrics=")
    return table[name]


class UniformSampler:
    """Independent draws per decision: uniform, or with per-decision prior weights.

    ``weights`` maps a decision label to one weight per option.
    """

    def __init__(self, space: Space, weights: Mapping[str, Sequence[float]] | None = None) -> None:
        self.space = space
        self.sizes = np.array([d.size for d in space.decisions], dtype=np.int64)
        self.cdf: dict[int, np.ndarray] = {}
        for label, w in (weights or {}).items():
            d = space.decision(label)
            arr = np.asarray(w, dtype=float)
            if arr.shape != (d.size,) or (arr < 0).any() or arr.sum() <= 0:
                raise SpecError(f"prior weights for {label} must be {d.size} non-negative "
                                f"numbers with a positive sum, got {list(w)}")
            k = space.decisions.index(d)
            self.cdf[k] = np.cumsum(arr / arr.sum())

    def sample_indices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """An ``(n, decisions)`` array of option indices."""
        if len(self.sizes) == 0:
            return np.zeros((n, 0), dtype=np.int64)
        idx = rng.integers(0, self.sizes, size=(n, len(self.sizes)))
        for k, cdf in self.cdf.items():
            u = rng.random(n)
            idx[:, k] = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
        return idx

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[Assignment]:
        """``n`` assignments."""
        return [self.space.from_indices(row, {"sampler": "uniform"})
                for row in self.sample_indices(rng, n)]


class ConstrainedSampler(UniformSampler):
    """Rejection sampling under upper bounds, with early pruning of partial assignments.

    Decisions are drawn in schema order in a few chunks; after each chunk the partial
    assignment is completed with the cheapest known options for the rest and checked: a
    chunk that already breaks a bound is redrawn before later decisions are drawn. A bound
    that even the cheapest architecture found breaks is a ``ConstraintError``.
    """

    def __init__(self, space: Space, bounds: Mapping[str, float] | None = None, *,
                 weights: Mapping[str, Sequence[float]] | None = None,
                 metrics: Mapping[str, MetricFn] | None = None, chunks: int = 4,
                 max_tries: int = 2000) -> None:
        super().__init__(space, weights)
        merged = {c.metric: c.max for c in space.constraints}
        merged.update(bounds or {})
        self.bounds = merged
        self.fns = {k: metric_of(k, metrics) for k in merged}
        self.chunks = max(1, min(chunks, len(space.decisions)))
        self.max_tries = max_tries
        self._cheapest: dict[str, np.ndarray] = {}

    def _ok(self, a: Assignment) -> bool:
        return all(self.fns[k](self.space, a) <= b for k, b in self.bounds.items())

    def cheapest(self, metric: str) -> np.ndarray:
        """Option indices minimising ``metric`` by coordinate descent (cached)."""
        if metric in self._cheapest:
            return self._cheapest[metric]
        fn = self.fns[metric]
        idx = np.zeros(len(self.sizes), dtype=np.int64)
        best = fn(self.space, self.space.from_indices(idx))
        for _ in range(3):
            improved = False
            for k, size in enumerate(self.sizes):
                for o in range(size):
                    if o == idx[k]:
                        continue
                    trial = idx.copy()
                    trial[k] = o
                    v = fn(self.space, self.space.from_indices(trial))
                    if v < best:
                        best, idx, improved = v, trial, True
            if not improved:
                break
        self._cheapest[metric] = idx
        for m, bound in self.bounds.items():
            if m == metric and best > bound:
                raise ConstraintError(
                    f"no architecture of {self.space.name} meets {m} <= {bound:,.0f} "
                    f"(the smallest found has {m} = {best:,.0f})",
                    hint=f"raise the bound above {best:,.0f} or change the space")
        return idx

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[Assignment]:
        if not self.bounds:
            return super().sample(rng, n)
        floors = {m: self.cheapest(m) for m in self.bounds}
        edges = np.linspace(0, len(self.sizes), self.chunks + 1).astype(int)
        out: list[Assignment] = []
        tries = 0
        while len(out) < n:
            row = self.sample_indices(rng, 1)[0]
            ok = True
            for c in range(1, self.chunks + 1):
                end = edges[c]
                for _ in range(20):
                    tries += 1
                    if tries > self.max_tries * max(1, n):
                        raise ConstraintError(
                            f"gave up after {tries} tries to meet {self.bounds} in "
                            f"{self.space.name}", hint="loosen the bounds")
                    partial_ok = True
                    for m, bound in self.bounds.items():
                        probe = floors[m].copy()
                        probe[:end] = row[:end]
                        if self.fns[m](self.space, self.space.from_indices(probe)) > bound:
                            partial_ok = False
                            break
                    if partial_ok:
                        break
                    row[edges[c - 1]:end] = self.sample_indices(rng, 1)[0][edges[c - 1]:end]
                else:
                    ok = False
                    break
            if ok:
                a = self.space.from_indices(row, {"sampler": "constrained",
                                                  "bounds": dict(self.bounds)})
                if self._ok(a):
                    out.append(a)
        return out


def sample(space: Space, rng: np.random.Generator, n: int = 1, *,
           bounds: Mapping[str, float] | None = None, **kw: Any) -> list[Assignment]:
    """Convenience: uniform samples, or constrained when ``bounds`` or space constraints."""
    if bounds or space.constraints:
        return ConstrainedSampler(space, bounds, **kw).sample(rng, n)
    return UniformSampler(space, kw.get("weights")).sample(rng, n)
