"""Run seeded searches of any strategy against the NB201 table, with a query budget.

The query convention: a query is one table lookup of a *distinct* architecture (distinct
canonical hash). A strategy that proposes an architecture equal to one already evaluated
gets the cached answer for free; so that such repeats cannot loop forever, a search stops
after ``max_proposals`` proposals in all (default 20 per query), and when the strategy
reports the space used up (:class:`nasir.strategies.dedup.SpaceExhausted`).

Strategies receive ``{"accuracy": table % / 100}``. Regret is reported in accuracy points
(%): ``table optimum − best accuracy found``.

>>> r = run_search("random", seed=0, queries=20)
>>> r.queries, len(r.curve), bool(r.curve[-1] == r.best_accuracy), round(r.regret, 4) >= 0
(20, 20, True, True)
>>> s = summarize({"random": [r]}, queries=20, optimum=r.optimum)
>>> sorted(s["results"][0])
['mean_best_accuracy', 'mean_regret', 'std_best_accuracy', 'std_regret', 'strategy']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasir.bench.nb201_table import NB201Table
from nasir.errors import SpecError

__all__ = ["HELD_OUT_SEEDS", "TUNED", "SearchRun", "run_benchmark", "run_search", "summarize"]

#: options tuned for a ~150-query budget on this table; ``nasir bench`` uses them unless
#: ``--paper-defaults``. MetaQNN also gets ``budget=queries`` (its ε schedule scaled to the
#: budget). Which seeds chose what (notes/issue-7.md, notes/issue-8.md, notes/issue-19.md):
#:
#: * REINFORCE, PPO, MetaQNN: compared on tuning seeds from 1000 up (within 1000–1029,
#:   5–30 seeds a setting).
#:   REINFORCE was re-tuned after its first setting missed its goal on the reported seeds.
#: * regularized evolution: P20/S5 was the first guess; P10/S3, P15/S5 and P30/S10 were then
#:   run on the reported seeds 0–99 (P30/S10 and P15/S5 scored better there), and P20/S5 was
#:   kept. So the reported seeds were looked at, but did not pick the setting.
#: * BANANAS' ``profile="nasir"`` (its defaults before issue 21 made the paper's method the
#:   default) was compared on seeds 1000–1059, after a first run on the reported seeds.
#:   PNAS (``profile="nasir"``, beam 16) was not tuned; grid search's default order
#:   (distinct architectures) came from a simulation on the table, not from seeds.
#:
#: Seeds 0–99 are therefore not clean for evolution; :data:`HELD_OUT_SEEDS` (5000–5099)
#: were used for nothing before the figures reported on them.
TUNED: dict[str, dict[str, Any]] = {
    "regularized_evolution": {"population": 20, "sample": 5},
    # ENAS's controller logit shaping (tanh constant 2.5, temperature 5) keeps the policy
    # from collapsing within the first few dozen queries
    "reinforce": {"lr": 0.03, "tanh_constant": 2.5, "temperature": 5.0},
    "ppo": {"lr": 0.03, "batch": 2, "epochs": 4},
    "metaqnn": {"state": "layer"},
    "bananas": {"profile": "nasir"},
    "pnas": {"profile": "nasir"},
}

#: seeds no setting was ever chosen on: ``nasir bench nb201 --first-seed 5000 --seeds 100``
HELD_OUT_SEEDS = range(5000, 5100)


@dataclass
class SearchRun:
    """One seeded search: best-so-far curve (one entry per query) and its outcome."""

    strategy: str
    seed: int
    queries: int
    optimum: float
    curve: np.ndarray
    proposals: int = 0
    duplicates: int = 0
    stopped: str = ""
    seconds: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)

    @property
    def best_accuracy(self) -> float:
        """Best table accuracy (%) found."""
        return float(self.curve[-1]) if len(self.curve) else float("nan")

    @property
    def regret(self) -> float:
        """``optimum − best`` in accuracy points."""
        return self.optimum - self.best_accuracy


def run_search(strategy: str, seed: int, queries: int, *,
               options: Mapping[str, Any] | None = None, table: NB201Table | None = None,
               batch: int = 1, max_proposals: int | None = None) -> SearchRun:
    """Search the NB201 table with ``strategy`` until ``queries`` distinct lookups."""
    from nasir.passes.hashing import assignment_hash
    from nasir.spaces import get_space
    from nasir.strategies import make_strategy
    from nasir.strategies.dedup import SpaceExhausted

    if queries < 1 or batch < 1:
        raise SpecError(f"queries and batch must be >= 1, got {queries} and {batch}")
    space = get_space("nb201")
    t = (table or NB201Table.load()).fresh()
    s = make_strategy(strategy, space, seed=seed, **dict(options or {}))
    limit = max_proposals or 20 * queries
    cache: dict[str, float] = {}
    curve: list[float] = []
    best, best_a = float("-inf"), None
    proposals = duplicates = 0
    stopped = ""
    start = time.perf_counter()
    while t.queries < queries and not stopped:
        try:
            batch_a = s.propose(batch)
        except SpaceExhausted:
            stopped = "exhausted"
            break
        for a in batch_a:
            proposals += 1
            h = assignment_hash(space, a)
            acc = cache.get(h)
            if acc is None:
                if t.queries >= queries:
                    break
                acc = cache[h] = t.accuracy(a)
                if acc > best:
                    best, best_a = acc, a
                curve.append(best)
            else:
                duplicates += 1
            s.feedback(a, {"accuracy": acc / 100.0})
            if proposals >= limit:
                stopped = "proposal limit"
                break
    if curve and len(curve) < queries:
        curve.extend([curve[-1]] * (queries - len(curve)))
    return SearchRun(strategy, seed, queries, t.optimum, np.asarray(curve, dtype=float),
                     proposals, duplicates, stopped, time.perf_counter() - start,
                     best_a.to_json() if best_a is not None else {})


def run_benchmark(strategies: Sequence[str], queries: int, seeds: int, *,
                  options: Mapping[str, Mapping[str, Any]] | None = None, first_seed: int = 0,
                  batch: int = 1,
                  progress: Callable[[str, int], None] | None = None
                  ) -> dict[str, list[SearchRun]]:
    """``seeds`` searches per strategy (seeds ``first_seed …``); ``options`` per strategy."""
    table = NB201Table.load()
    out: dict[str, list[SearchRun]] = {}
    for name in strategies:
        runs = []
        for k in range(seeds):
            runs.append(run_search(name, first_seed + k, queries,
                                   options=(options or {}).get(name), table=table, batch=batch))
            if progress is not None:
                progress(name, k)
        out[name] = runs
    return out


def summarize(results: Mapping[str, Sequence[SearchRun]], queries: int, optimum: float
              ) -> dict[str, Any]:
    """The benchmark's JSON object: mean/std of regret and best accuracy per strategy."""
    rows = []
    for name, runs in results.items():
        reg = np.array([r.regret for r in runs])
        acc = np.array([r.best_accuracy for r in runs])
        rows.append({"strategy": name, "mean_regret": float(reg.mean()),
                     "std_regret": float(reg.std()), "mean_best_accuracy": float(acc.mean()),
                     "std_best_accuracy": float(acc.std())})
    n = len(next(iter(results.values()))) if results else 0
    return {"queries": queries, "seeds": n, "optimum": optimum, "results": rows}
