"""The test split, used once: accuracy of the best architectures' kept weights.

Search scores every trial on a validation split held out from the training data; the data
set's test split is touched only here, for the final report of the run's best trial and its
Pareto front. Each of those whose trained weights the run kept (``RUN/weights/HASH.pt``:
the training estimator keeps them, and so does a user evaluator that built its module with
``trial.build_module()``) is lowered, loaded with those weights and scored on the test split.

>>> import tempfile
>>> from nasir.runtime.driver import run_search
>>> from nasir.runtime.experiment import Experiment
>>> exp = Experiment.from_dict({"space": {"name": "nb201", "options": {"channels": 4,
...     "cells_per_stage": 1}}, "estimator": {"options": {"epochs": 1}, "latency": "off"},
...     "strategy": {"name": "random"}, "objectives": {"accuracy": "max"},
...     "executor": {"kind": "inprocess"}, "budget": {"trials": 2}})
>>> d = tempfile.mkdtemp()
>>> _ = run_search(exp, d)
>>> scores = final_test_scores(d)
>>> len(scores) >= 1 and all(0.0 <= s["test_accuracy"] <= 1.0 for s in scores.values())
True
"""

from __future__ import annotations

import os
from typing import Any

from nasir.runtime.store import RunStore

__all__ = ["final_test_scores"]


def final_test_scores(folder: str, limit: int = 8) -> dict[int, dict[str, Any]]:
    """``{trial id: {"test_accuracy": …, "test_n": …}}`` for the best trial and the Pareto
    front (at most ``limit`` trials) whose weights the run kept; ``{}`` when the run's data
    has no test split or no weights were kept. Cached in the store (``meta final_test_scores``)."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.results import pareto_trials

    st = RunStore.open(folder)
    try:
        cfg, trials, best = st.config, st.trials(), st.best()
        cached = st.meta("final_test_scores")
    finally:
        st.close()
    exp = Experiment.from_dict(cfg)
    if exp.data_name is None:
        return {}
    chosen = ([best] if best else []) + list(pareto_trials(trials, exp.objectives))
    ids: list[int] = []
    for t in chosen:
        if t["id"] not in ids and os.path.exists(_weights(folder, t)):
            ids.append(int(t["id"]))
    ids = ids[:limit]
    if not ids:
        return {}
    key = sorted(ids)
    if isinstance(cached, dict) and cached.get("ids") == key:
        return {int(k): v for k, v in cached["scores"].items()}
    scores = _score(folder, exp, {t["id"]: t for t in trials}, ids)
    st = RunStore.open(folder)
    try:
        st.set_meta("final_test_scores", {"ids": key, "scores": {str(k): v
                                                           for k, v in scores.items()}})
    finally:
        st.close()
    return scores


def _weights(folder: str, t: Any) -> str:
    return os.path.join(folder, "weights", f"{t['hash']}.pt")


def _score(folder: str, exp: Any, trials: dict[int, Any], ids: list[int]
           ) -> dict[int, dict[str, Any]]:
    import torch

    from nasir.backends.torch.data import make_loader
    from nasir.backends.torch.lowering import lower
    from nasir.runtime.estimators import load_run_data
    from nasir.runtime.worker import build_space

    data = load_run_data(exp)
    if data is None or data.test is None:
        return {}
    space = build_space(exp.to_dict(), folder)
    out: dict[int, dict[str, Any]] = {}
    for tid in ids:
        t = trials[tid]
        module = lower(space.instantiate(space.check(t["assignment"])), seed=0)
        module.load_state_dict(torch.load(_weights(folder, t), weights_only=True))
        module.eval()
        right = total = 0
        with torch.no_grad():
            for x, y in make_loader(data.test, 256, False, 0):
                pred = module(x)
                pred = pred[0] if isinstance(pred, tuple) else pred
                right += int((pred.argmax(1) == y).sum())
                total += len(y)
        out[tid] = {"test_accuracy": right / max(1, total), "test_n": total}
    return out
