"""``kill -9`` of the driver at random points, then resume: nothing lost, nothing repeated.

:func:`kill_and_resume` starts ``nasir search`` (a real process with a pool of 2 workers on
the NB201 table), kills it with SIGKILL at a random moment after it made progress, resumes it
with ``nasir resume`` and kills that too, and so on; after each kill it checks the store
(trial ids contiguous, every finished trial of the previous kill unchanged, one feedback per
fed trial), and at the end compares the run with an uninterrupted one of the same seed.
``benchmarks/reliability_kill.py`` runs it with at least 20 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from typing import Any

from _sqlite_poll import read_only
from test_runtime_resume import _cli, _outcome

from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.store import FINAL, RunStore


def kill_experiment(trials: int, simulate_s: float = 0.15, seed: int = 11) -> dict[str, Any]:
    """The experiment (a dict) killed and resumed."""
    return {"space": {"name": "nb201"},
            "estimator": {"kind": "nb201", "options": {"simulate_s": simulate_s}},
            "strategy": {"name": "evolution", "options": {"population": 5, "sample": 2}},
            "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max", "params": "min"},
            "executor": {"kind": "pool", "workers": 2},
            "budget": {"trials": trials, "wall_time_s": None}, "seed": seed}


def _fed(db: str) -> int:
    try:
        con = read_only(db)
        try:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE fed=1").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def _check(folder: str, prev: dict[int, tuple]) -> tuple[dict[int, tuple], int, int]:
    """(finished trials now, lost since ``prev``, duplicated) after a kill."""
    rows = _outcome(folder)
    ids = [r[0] for r in rows]
    dup = len(ids) - len(set(ids)) + (ids != list(range(1, len(ids) + 1)))
    st = RunStore.open(folder)
    try:
        feedbacks = [e["trial"] for e in _feedback_events(st)]
    finally:
        st.close()
    fed = [r[0] for r in rows if r[5]]
    dup += len(feedbacks) - len(set(feedbacks)) + (sorted(set(feedbacks)) != fed)
    now = {r[0]: r for r in rows if r[2] in FINAL}
    lost = sum(1 for tid, r in prev.items() if now.get(tid, ())[:5] != r[:5])
    return now, lost, dup


def _feedback_events(st: RunStore) -> list[dict[str, Any]]:
    rows = st.conn.execute("SELECT trial, event FROM events ORDER BY seq").fetchall()
    return [{"trial": r["trial"]} for r in rows if json.loads(r["event"])["event"] == "feedback"]


def kill_and_resume(tmp: str, kills: int, trials: int, *, seed: int = 0,
                    simulate_s: float = 0.15, max_delay_s: float = 0.2) -> dict[str, Any]:
    """Kill the run ``kills`` times at random points; returns the figures."""
    rng = random.Random(seed)
    exp = kill_experiment(trials, simulate_s)
    cfg = os.path.join(tmp, "exp.json")
    with open(cfg, "w") as fh:
        json.dump(exp, fh)
    folder = os.path.join(tmp, "killed")
    db = os.path.join(folder, "run.sqlite")
    t0 = time.perf_counter()
    prev: dict[int, tuple] = {}
    points: list[dict[str, Any]] = []
    lost = dup = 0
    for k in range(kills):
        argv = (_cli("search", "-c", cfg, "--run-dir", folder, "--no-progress", "--no-report")
                if k == 0 else _cli("resume", folder, "--no-progress", "--no-report"))
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = max(_fed(db), 0) if os.path.exists(db) else 0
        deadline = time.time() + 120
        # let it feed back 1-3 more trials, then kill somewhere inside the trials in flight:
        # waiting on progress rather than on the clock keeps the kill points inside the run
        # on a fast machine as on a loaded one
        target = start + rng.randint(1, 3)
        while time.time() < deadline and proc.poll() is None and _fed(db) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, max_delay_s))
        if proc.poll() is not None:  # it finished before the kill
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        now, lo, du = _check(folder, prev)
        st = RunStore.open(folder)
        inflight = sum(1 for t in st.trials() if t["status"] in ("running", "pending"))
        st.close()
        points.append({"fed": _fed(db), "finished": len(now), "in_flight": inflight,
                       "lost": lo, "duplicated": du})
        lost, dup, prev = lost + lo, dup + du, now
    r = subprocess.run(_cli("resume", folder, "--no-progress", "--no-report"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _, lo, du = _check(folder, prev)
    lost, dup = lost + lo, dup + du
    killed_s = time.perf_counter() - t0
    ref = os.path.join(tmp, "reference")
    t1 = time.perf_counter()
    run_search(Experiment.from_dict(exp), ref)
    ref_s = time.perf_counter() - t1
    got, want = _outcome(folder), _outcome(ref)
    missing = sum(1 for r in want if r not in got)
    return {"kills": len(points), "trials": trials, "points": points,
            "lost": lost + missing, "duplicated": dup + max(0, len(got) - len(want)),
            "same_as_uninterrupted": got == want, "in_flight_at_kill": sum(
                p["in_flight"] > 0 for p in points),
            "killed_run_s": round(killed_s, 1), "uninterrupted_s": round(ref_s, 1)}


def test_kill_9_at_random_points_loses_and_repeats_nothing(tmp_path):
    res = kill_and_resume(str(tmp_path), kills=3, trials=20, seed=1)
    assert res["kills"] == 3, res
    assert res["lost"] == 0 and res["duplicated"] == 0, res
    assert res["same_as_uninterrupted"], res
