"""Load: a store with many trials can be listed, shown and reported; 8 concurrent workers
writing through the driver lose nothing.

Only functional checks here: how fast the commands are is measured by
``benchmarks/store_commands.py`` (a 5,000-trial store against a small one timed in the same
run) and ``benchmarks/reliability_load.py`` (100,000 trials, 8 workers × 400 trials)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from typing import Any

from nasir.cli import main
from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.store import RunStore


def fill_store(folder: str, n: int, seed: int = 0) -> float:
    """A finished NB201 run with ``n`` trials written through the store API (proposal,
    start, result, feedback: four transactions each, as the driver does); returns seconds."""
    from nasir.spaces import get_space

    rng = random.Random(seed)
    sp = get_space("nb201")
    cfg = Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max", "params": "min"}, "executor": {"kind": "inprocess"},
        "budget": {"trials": n}}).to_dict()
    t0 = time.perf_counter()
    st = RunStore.create(folder, cfg)
    try:
        for k in range(n):
            a = sp.from_indices([rng.randrange(d.size) for d in sp.decisions])
            tid = st.add_trial(a.to_json(), f"{rng.getrandbits(128):032x}",
                               [{"event": "propose", "k": k}])
            st.start_trial(tid, "w")
            if rng.random() < 0.05:
                st.finish_trial(tid, "failed", error="RuntimeError: injected", worker="w")
            else:
                acc = rng.uniform(0.1, 0.95)
                st.finish_trial(tid, "done", metrics={
                    "accuracy": acc, "params": rng.randrange(10_000, 1_500_000),
                    "macs": rng.randrange(10**6, 10**8)}, reward=acc, worker="w", eval_s=0.01)
            st.mark_fed(tid, [{"event": "feedback", "k": k}])
        st.set_meta("status", "finished")
    finally:
        st.close()
    return time.perf_counter() - t0


def time_commands(folder: str) -> dict[str, float]:
    """Seconds (wall) of ``nasir runs``, ``nasir show RUN`` and ``nasir report RUN``."""
    out: dict[str, float] = {}
    root = os.path.dirname(folder)
    for name, argv in (("runs", ["runs", "--root", root]), ("show", ["show", folder]),
                       ("report", ["report", folder])):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
        out[name] = time.perf_counter() - t0
    return out


def concurrent_run(folder: str, trials: int, workers: int = 8) -> dict[str, Any]:
    """A real search with a pool of ``workers`` processes; what the store holds after it."""
    exp = Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201",
                                                  "options": {"simulate_s": 0.02}},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "executor": {"kind": "pool", "workers": workers},
        "budget": {"trials": trials}, "seed": 2})
    t0 = time.perf_counter()
    s = run_search(exp, folder)
    wall = time.perf_counter() - t0
    st = RunStore.open(folder)
    try:
        ts = st.trials()
        feedbacks = sum(1 for e in st.events() if e["event"] == "feedback")
    finally:
        st.close()
    return {"trials": len(ts), "ids_contiguous": [t["id"] for t in ts] == list(
                range(1, trials + 1)),
            "done": s["counts"]["done"], "fed": sum(t["fed"] for t in ts),
            "feedbacks": feedbacks, "workers_used": len({t["worker"] for t in ts}),
            "lost": trials - sum(1 for t in ts if t["status"] == "done" and t["fed"]),
            "wall_s": wall}


def test_a_store_of_5000_trials_lists_shows_and_reports(tmp_path):
    folder = str(tmp_path / "runs" / "big")
    fill_store(folder, 5000)
    time_commands(folder)  # every command exits 0 (asserted inside)
    # `show` reads objectives with SQLite's json_extract: same front as the full trials
    from nasir.runtime.results import pareto_trials

    st = RunStore.open(folder)
    try:
        obj = {"accuracy": "max", "params": "min"}
        full = [t["id"] for t in pareto_trials(st.trials(), obj)]
        light = [t["id"] for t in pareto_trials(st.objective_rows(list(obj)), obj)]
        assert full == light and len(full) > 1
        assert [t["id"] for t in st.last_trials(3)] == [4998, 4999, 5000]
    finally:
        st.close()


def test_eight_concurrent_workers_lose_nothing(tmp_path):
    r = concurrent_run(str(tmp_path / "run"), trials=48)
    assert r["ids_contiguous"] and r["done"] == 48 and r["fed"] == 48, r
    assert r["feedbacks"] == 48 and r["lost"] == 0, r
    assert r["workers_used"] >= 2, r
