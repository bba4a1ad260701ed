"""Multi-objective bookkeeping: Pareto fronts and the 2-D hypervolume (core: the runtime,
reports and strategies all rank by it; ``nasir.strategies.pareto`` re-exports it).

Objectives are named metrics with a sense: accuracy is maximised, latency / MACs are
minimised. Internally every objective is turned into one to *minimise* (maximised ones are
negated), so "dominates" means "no worse in every objective and better in one".

>>> pts = [(0.90, 30.0), (0.92, 50.0), (0.89, 40.0), (0.95, 80.0)]
>>> pareto_front(pts, senses=("max", "min"))
[0, 1, 3]
>>> round(hypervolume(pts, reference=(0.8, 100.0), senses=("max", "min")), 3)
8.6
>>> arch = ParetoArchive(("accuracy", "macs"))
>>> for k, (acc, macs) in enumerate(pts):
...     _ = arch.add({"id": k}, {"accuracy": acc, "macs": macs})
>>> [a["id"] for a, _ in arch.front()]
[3, 1, 0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.errors import SpecError

__all__ = ["SENSES", "ParetoArchive", "dominates", "hypervolume", "pareto_front"]

#: default sense of well-known metrics
SENSES: dict[str, str] = {"accuracy": "max", "reward": "max", "latency_ms": "min",
                          "macs": "min", "params": "min", "activation_bytes": "min"}


def _signs(senses: Sequence[str], dims: int) -> np.ndarray:
    if len(senses) != dims:
        raise SpecError(f"{dims} objectives but {len(senses)} senses given",
                        hint="give one 'max' or 'min' per objective")
    bad = [s for s in senses if s not in ("max", "min")]
    if bad:
        raise SpecError(f"unknown objective sense {bad[0]!r}", hint="use 'max' or 'min'")
    return np.array([-1.0 if s == "max" else 1.0 for s in senses])


def _as_min(points: Iterable[Sequence[float]], senses: Sequence[str]) -> np.ndarray:
    arr = np.asarray([tuple(p) for p in points], dtype=float)
    if arr.size == 0:
        return arr.reshape(0, len(senses))
    if arr.ndim != 2:
        raise SpecError("points must be a list of equal-length tuples of numbers")
    return arr * _signs(senses, arr.shape[1])


def dominates(p: Sequence[float], q: Sequence[float],
              senses: Sequence[str] = ("max", "min")) -> bool:
    """Whether ``p`` Pareto-dominates ``q``.

    >>> dominates((0.9, 10), (0.8, 20)), dominates((0.9, 10), (0.95, 20))
    (True, False)
    """
    a, b = _as_min([p, q], senses)
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(points: Iterable[Sequence[float]],
                 senses: Sequence[str] = ("max", "min")) -> list[int]:
    """Indices of the non-dominated points (ties: the first of equal points), ascending.

    Points are swept in lexicographic order, so each is compared with the front found so far
    only: ``O(n log n)`` for two objectives, ``O(n · front)`` otherwise (a 100,000-trial
    run's front takes well under a second). Points with a NaN neither dominate nor are
    dominated (they are kept).

    >>> pareto_front([(1, 1), (1, 1), (0, 2), (2, 0), (2, 2)], senses=("min", "min"))
    [0, 2, 3]
    """
    arr = _as_min(points, senses)
    if len(arr) == 0:
        return []
    nan = np.isnan(arr).any(axis=1)
    keep: list[int] = [int(i) for i in np.flatnonzero(nan)]
    idx = np.flatnonzero(~nan)
    sub = arr[idx]
    order = idx[np.lexsort(tuple(sub[:, j] for j in reversed(range(arr.shape[1]))))]
    if arr.shape[1] == 2:
        best = np.inf
        for i in order:  # sorted by x: kept iff its y beats every earlier point's
            if arr[i, 1] < best:
                best = arr[i, 1]
                keep.append(int(i))
        return sorted(keep)
    front = np.empty_like(arr)
    n = 0
    for i in order:  # an earlier point <= in every objective dominates or equals it
        if n and bool(np.any(np.all(front[:n] <= arr[i], axis=1))):
            continue
        front[n] = arr[i]
        n += 1
        keep.append(int(i))
    return sorted(keep)


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float],
                senses: Sequence[str] = ("max", "min")) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (2 objectives).

    Points that do not dominate the reference contribute nothing.
    """
    arr = _as_min(points, senses)
    if arr.shape[1] != 2:
        raise SpecError(f"hypervolume is implemented for 2 objectives, got {arr.shape[1]}",
                        hint="pick two objectives, e.g. accuracy and latency_ms")
    ref = np.asarray(reference, dtype=float) * _signs(senses, 2)
    arr = arr[np.all(arr < ref, axis=1)]
    if len(arr) == 0:
        return 0.0
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    area, best_y = 0.0, ref[1]
    xs = [*arr[:, 0].tolist(), float(ref[0])]
    for k in range(len(arr)):
        best_y = min(best_y, float(arr[k, 1]))
        area += (xs[k + 1] - xs[k]) * (ref[1] - best_y)
    return float(area)


class ParetoArchive:
    """The running Pareto front of evaluated architectures over named objectives.

    Failed trials and trials missing an objective are ignored.
    """

    def __init__(self, objectives: Sequence[str] = ("accuracy", "latency_ms"),
                 senses: Sequence[str] | None = None) -> None:
        self.objectives = tuple(objectives)
        if senses is None:
            unknown = [o for o in self.objectives if o not in SENSES]
            if unknown:
                raise SpecError(f"no default sense for objective {unknown[0]!r}",
                                hint="pass senses=('max'|'min', ...)")
            senses = [SENSES[o] for o in self.objectives]
        self.senses = tuple(senses)
        _signs(self.senses, len(self.objectives))
        self._items: list[tuple[Any, dict[str, Any], tuple[float, ...]]] = []

    def point(self, metrics: Mapping[str, Any]) -> tuple[float, ...] | None:
        """The objective vector of a trial, or ``None`` if it cannot be placed."""
        if metrics.get("status", "ok") != "ok":
            return None
        try:
            p = tuple(float(metrics[o]) for o in self.objectives)
        except (KeyError, TypeError, ValueError):
            return None
        return p if all(np.isfinite(p)) else None

    def add(self, item: Any, metrics: Mapping[str, Any]) -> bool:
        """Offer a trial; ``True`` when it joins the front (dominated members leave)."""
        p = self.point(metrics)
        if p is None:
            return False
        for _, _, q in self._items:
            if q == p or dominates(q, p, self.senses):
                return False
        self._items = [it for it in self._items if not dominates(p, it[2], self.senses)]
        self._items.append((item, dict(metrics), p))
        return True

    def front(self) -> list[tuple[Any, dict[str, Any]]]:
        """Members of the front, sorted by the first objective (best first)."""
        sign = -1.0 if self.senses[0] == "max" else 1.0
        order = sorted(self._items, key=lambda it: sign * it[2][0])
        return [(item, m) for item, m, _ in order]

    def points(self) -> list[tuple[float, ...]]:
        """Objective vectors of the front, in :meth:`front` order."""
        sign = -1.0 if self.senses[0] == "max" else 1.0
        return [p for _, _, p in sorted(self._items, key=lambda it: sign * it[2][0])]

    def hypervolume(self, reference: Sequence[float]) -> float:
        """Hypervolume of the front against ``reference`` (2 objectives)."""
        return hypervolume(self.points(), reference, self.senses)

    @classmethod
    def of(cls, results: Iterable[tuple[Any, Mapping[str, Any]]],
           objectives: Sequence[str] = ("accuracy", "latency_ms"),
           senses: Sequence[str] | None = None) -> ParetoArchive:
        """The archive of a strategy's ``results`` (``[(assignment, metrics), ...]``)."""
        arch = cls(objectives, senses)
        for item, m in results:
            arch.add(item, m)
        return arch
