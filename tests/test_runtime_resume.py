"""Run store, resume after kill -9, executors and worker death (NB201 table, deterministic)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from _sqlite_poll import read_only

from nasir.runtime.driver import Driver, run_search
from nasir.runtime.executors import InProcessExecutor, PoolExecutor
from nasir.runtime.experiment import Experiment
from nasir.runtime.resume import resume_run
from nasir.runtime.store import RunStore

TRIALS = 14


def _exp(**over) -> Experiment:
    d = {"space": {"name": "nb201"},
         "estimator": {"kind": "nb201", "options": {"simulate_s": 0.25}},
         "strategy": {"name": "evolution", "options": {"population": 5, "sample": 2}},
         "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max", "params": "min"},
         "executor": {"kind": "pool", "workers": 2}, "budget": {"trials": TRIALS}, "seed": 7}
    d.update(over)
    return Experiment.from_dict(d)


def _outcome(folder: str) -> list[tuple]:
    st = RunStore.open(folder)
    try:
        return [(t["id"], t["hash"], t["status"], t["metrics"].get("accuracy"), t["reward"],
                 t["fed"]) for t in st.trials()]
    finally:
        st.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasir", *args]


def _search_args(run_dir: str) -> list[str]:
    return _cli("search", "--space", "nb201", "--estimator", "nb201",
                "--estimator-opt", "simulate_s=0.25", "--strategy", "evolution",
                "--strategy-opt", "population=5", "--strategy-opt", "sample=2",
                "--reward", "accuracy", "--objective", "accuracy:max",
                "--objective", "params:min", "--trials", str(TRIALS), "--seed", "7",
                "--workers", "2", "--run-dir", run_dir, "--no-progress", "--no-report")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[tuple]:
    folder = str(tmp_path_factory.mktemp("ref") / "run")
    summary = run_search(_exp(), folder)
    assert summary["counts"]["done"] == TRIALS
    return _outcome(folder)


def test_kill_9_mid_trial_then_resume_gives_the_uninterrupted_trials(tmp_path, reference):
    folder = str(tmp_path / "run")
    proc = subprocess.Popen(_search_args(folder), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    db = os.path.join(folder, "run.sqlite")
    deadline = time.time() + 90
    running: list = []
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if not os.path.exists(db):
            continue
        try:
            con = read_only(db)
            finished = con.execute("SELECT COUNT(*) FROM trials WHERE fed=1").fetchone()[0]
            running = con.execute("SELECT id FROM trials WHERE status='running'").fetchall()
            con.close()
        except sqlite3.OperationalError:
            continue
        if finished >= 5 and running:
            break
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    before = _outcome(folder)
    assert running, "the kill did not land while a trial was in flight"
    assert any(t[2] in ("running", "pending") for t in before)
    done_before = {t[0]: t for t in before if t[2] == "done"}
    # resume through the CLI, as a user would
    r = subprocess.run(_cli("resume", folder, "--no-progress", "--no-report"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    after = _outcome(folder)
    assert after == reference
    # no finished trial lost, changed or repeated
    for tid, t in done_before.items():
        assert after[tid - 1] == (*t[:5], 1)
    assert [t[0] for t in after] == list(range(1, TRIALS + 1))
    st = RunStore.open(folder)
    events = st.events()
    st.close()
    feedbacks = [e for e in events if e["event"] == "feedback"]
    assert len(feedbacks) == TRIALS


def test_resume_of_a_finished_run_extends_its_budget(tmp_path, reference):
    folder = str(tmp_path / "run")
    run_search(_exp(budget={"trials": 6}, executor={"kind": "inprocess"},
                    estimator={"kind": "nb201"}), folder)
    resume_run(folder, trials=9)
    out = _outcome(folder)
    assert len(out) == 9 and all(t[2] == "done" and t[5] == 1 for t in out)
    other = str(tmp_path / "straight")
    run_search(_exp(budget={"trials": 9}, executor={"kind": "inprocess"},
                    estimator={"kind": "nb201"}), other)
    assert out == _outcome(other)


def test_store_rejects_a_second_run_in_the_same_folder(tmp_path):
    from nasir.errors import StoreError

    RunStore.create(str(tmp_path), {"seed": 0}).close()
    with pytest.raises(StoreError, match="already holds a run"):
        RunStore.create(str(tmp_path), {"seed": 0})
    with pytest.raises(StoreError, match="not a nasir run folder"):
        RunStore.open(str(tmp_path / "nope"))


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    # an nb201 table estimator on another space fails every trial with its reason
    exp = _exp(space={"name": "tiny_mnasnet"}, executor={"kind": "inprocess"},
               budget={"trials": 3}, estimator={"kind": "nb201"})
    s = run_search(exp, str(tmp_path / "run"))
    assert s["counts"]["failed"] == 3 and s["status"] == "finished"
    st = RunStore.open(str(tmp_path / "run"))
    assert all("needs the nb201 space" in t["error"] for t in st.trials())
    st.close()


def test_constraints_mark_trials_infeasible_without_evaluating(tmp_path):
    exp = _exp(executor={"kind": "inprocess"}, budget={"trials": 8},
               estimator={"kind": "nb201"}, constraints={"params": 300_000})
    run_search(exp, str(tmp_path / "run"))
    st = RunStore.open(str(tmp_path / "run"))
    ts = st.trials()
    st.close()
    bad = [t for t in ts if t["status"] == "infeasible"]
    assert bad and all(t["metrics"]["params"] > 300_000 and "params" in t["error"] for t in bad)
    assert all(t["metrics"]["params"] <= 300_000 for t in ts if t["status"] == "done")


def _task(k: int) -> dict:
    from nasir.spaces import get_space

    a = get_space("nb201").reference("resnet").to_json()
    return {"trial": k, "assignment": a, "seed": 0}


def _collect(ex, n: int, limit: float = 60.0) -> list[dict]:
    out: list[dict] = []
    t0 = time.time()
    while len(out) < n and time.time() - t0 < limit:
        out += ex.poll(0.5)
    return out


def test_pool_worker_death_is_retried_once_then_failed():
    exp = {"space": {"name": "nb201"},
           "estimator": {"kind": "nb201", "options": {"simulate_s": 3.0}}}
    ex = PoolExecutor(exp, None, workers=1)
    try:
        ex.submit(_task(1))
        slot = ex._slots[0]
        for attempt in (1, 2):
            time.sleep(0.3)
            assert slot.task is not None and slot.task.get("attempt") == attempt
            os.kill(slot.proc.pid, signal.SIGKILL)
            out = ex.poll(5.0)
            if attempt == 1:
                assert out == [] and ex.pending == 1  # retried on a fresh worker
                ex.poll(0.1)
        assert len(out) == 1 and out[0]["status"] == "failed"
        assert "worker died" in out[0]["error"] and out[0]["attempt"] == 2
        ex.submit(_task(2))
        time.sleep(0.3)
        os.kill(ex._slots[0].proc.pid, signal.SIGKILL)
        res = _collect(ex, 1)
        assert res[0]["status"] == "done" and res[0]["attempt"] == 2
    finally:
        ex.close()


def test_pool_and_inprocess_timeouts_fail_the_trial():
    exp = {"space": {"name": "nb201"},
           "estimator": {"kind": "nb201", "options": {"simulate_s": 5.0}}}
    for ex in (InProcessExecutor(exp, None, timeout_s=0.5),
               PoolExecutor(exp, None, workers=1, timeout_s=1.5)):
        try:
            ex.submit(_task(1))
            res = _collect(ex, 1)
            assert res[0]["status"] == "failed" and "timeout" in res[0]["error"]
        finally:
            ex.close()


def test_replay_mismatch_is_a_clear_error(tmp_path):
    from nasir.errors import NasirError

    folder = str(tmp_path / "run")
    run_search(_exp(executor={"kind": "inprocess"}, budget={"trials": 4},
                    estimator={"kind": "nb201"}), folder)
    st = RunStore.open(folder)
    cfg = st.config
    cfg["seed"] = 8  # a different seed cannot replay the stored history
    with pytest.raises(NasirError, match="does not replay"):
        Driver(st, Experiment.from_dict(cfg)).run()
    st.close()
    json.dumps(cfg)
