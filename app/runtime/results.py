"""Reading results out of a run: finished trials, the Pareto front, best-so-far curves.

>>> ts = [{"id": 1, "status": "done", "reward": 0.5, "metrics": {"accuracy": 0.9, "params": 9}},
...       {"id": 2, "status": "failed", "reward": None, "metrics": {}},
...       {"id": 3, "status": "done", "reward": 0.7, "metrics": {"accuracy": 0.8, "params": 3}},
...       {"id": 4, "status": "done", "reward": 0.6, "metrics": {"accuracy": 0.7, "params": 5}}]
>>> [t["id"] for t in pareto_trials(ts, {"accuracy": "max", "params": "min"})]
[3, 1]
>>> best_so_far(ts)
[0.5, 0.5, 0.7, 0.7]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nasir.metrics import finite

__all__ = ["best_so_far", "objective_pair", "pareto_trials"]


def _val(t: Mapping[str, Any], key: str) -> float | None:
    return finite(t.get("reward") if key == "reward" else t.get("metrics", {}).get(key))


def objective_pair(objectives: Mapping[str, str]) -> list[tuple[str, str]]:
    """The objectives as ``(metric, sense)`` pairs, in order."""
    return [(k, v) for k, v in objectives.items()]


def pareto_trials(trials: Sequence[Mapping[str, Any]],
                  objectives: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """Finished trials on the Pareto front of ``objectives``, sorted by the first objective
    (worst to best for a ``max`` objective: cheapest first). Duplicated architectures count
    once (the first trial)."""
    from nasir.pareto import pareto_front

    keys = list(objectives)
    senses = [objectives[k] for k in keys]
    pts, items, seen = [], [], set()
    for t in trials:
        if t.get("status") != "done" or t.get("cached_from"):
            continue
        vals = [_val(t, k) for k in keys]
        if any(v is None for v in vals):
            continue
        key = t.get("hash") or id(t)
        if key in seen:
            continue
        seen.add(key)
        pts.append(tuple(float(v) for v in vals if v is not None))
        items.append(t)
    if not pts:
        return []
    front = [items[i] for i in pareto_front(pts, senses=senses)]
    sign = 1.0 if senses[0] == "max" else -1.0
    return sorted(front, key=lambda t: (sign * (_val(t, keys[0]) or 0.0), t["id"]))


def best_so_far(trials: Sequence[Mapping[str, Any]], key: str = "reward") -> list[float]:
    """Running maximum of ``key`` over trials in id order (``nan`` until the first value)."""
    out, best = [], -math.inf
    for t in trials:
        v = _val(t, key) if t.get("status") == "done" else None
        if v is not None:
            best = max(best, v)
        out.append(best if best > -math.inf else math.nan)
    return out
