"""Faults injected into real runs: failing trials, a full disk, a read-only run folder.

The fault run uses :class:`nasir.runtime.faults.FaultEstimator` on a small NB201 network:
each fault goes through the real failure path (a raised exception, a NaN metric, the torch
backend's memory check, the pool's trial timeout, a real TVM compile error, a TVM RPC
connection to a closed port, a worker killed by SIGKILL) and must be recorded as a failed
trial with its reason while the run goes on.
"""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from nasir.errors import NasirError, StoreError
from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.store import RunStore

#: the small NB201 network (compiles in about a second)
SMALL_NB201 = {"name": "nb201", "options": {"input_shape": [3, 8, 8], "channels": 4,
                                            "cells_per_stage": 1}}
FAULT_SHARES = {"raise": 0.12, "nan": 0.12, "memory": 0.12, "sleep": 0.08, "compile": 0.08,
                "rpc": 0.08, "kill": 0.06}
#: the reason each fault must leave in the store
REASONS = {"raise": "RuntimeError: injected fault", "nan": "metric accuracy is nan",
           "memory": "ResourceError: predicted training memory", "sleep": "timeout after",
           "compile": "TVM failed to compile", "rpc": "rpc: ", "kill": "worker died"}


def fault_experiment(trials: int = 16, seed: int = 27, **over) -> Experiment:
    """A pool run over the fault estimator (also used by benchmarks/reliability_*.py)."""
    d = {"space": SMALL_NB201,
         "estimator": {"kind": "fault", "latency": "off",
                       "options": {"faults": FAULT_SHARES, "sleep_s": 90}},
         "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
         "objectives": {"accuracy": "max", "params": "min"},
         "executor": {"kind": "pool", "workers": 2, "trial_timeout_s": 45},
         "budget": {"trials": trials}, "seed": seed}
    d.update(over)
    return Experiment.from_dict(d)


def fault_counts(folder: str) -> dict[str, dict[str, int]]:
    """Per fault kind: injected (by the estimator's own rule) and recorded with its reason."""
    from nasir.runtime.faults import FaultEstimator
    from nasir.runtime.worker import build_space

    st = RunStore.open(folder)
    try:
        cfg, trials = st.config, st.trials()
    finally:
        st.close()
    space = build_space(cfg)
    est = FaultEstimator(**cfg["estimator"]["options"])
    out: dict[str, dict[str, int]] = {}
    for t in trials:
        fault = est.fault_of(space, t["assignment"]) or "none"
        c = out.setdefault(fault, {"injected": 0, "recorded": 0, "cached": 0})
        c["injected"] += 1
        if t["cached_from"]:
            c["cached"] += 1
            ok = t["status"] == "done"
        elif fault == "none":
            ok = t["status"] == "done" and t["metrics"]["accuracy"] > 0
        else:
            ok = t["status"] == "failed" and REASONS[fault] in (t["error"] or "")
        c["recorded"] += int(ok)
    return out


@pytest.mark.slow
def test_every_fault_is_recorded_with_its_reason_and_the_run_goes_on(tmp_path):
    folder = str(tmp_path / "run")
    s = run_search(fault_experiment(), folder)
    assert s["status"] == "finished"
    counts = fault_counts(folder)
    # every fault kind was injected at least once, and every trial has the right outcome
    assert set(counts) == {*FAULT_SHARES, "none"}, counts
    st = RunStore.open(folder)
    errors = [(t["id"], t["error"]) for t in st.trials()]
    st.close()
    assert all(c["recorded"] == c["injected"] for c in counts.values()), (counts, errors)
    n_failed = sum(c["injected"] - c["cached"] for k, c in counts.items() if k != "none")
    assert s["counts"]["failed"] == n_failed
    assert s["counts"]["done"] + s["counts"]["failed"] == 16
    st = RunStore.open(folder)
    killed = [t for t in st.trials() if "worker died" in (t["error"] or "")]
    st.close()
    assert killed and all(t["attempts"] == 1 for t in killed)  # retried inside the pool
    assert all("on all 2 attempts" in t["error"] for t in killed)


# -- disk full / read-only run folder --------------------------------------------------------

def _tiny(trials: int = 6) -> Experiment:
    return Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
        "budget": {"trials": trials}, "seed": 1})


class _FullDisk:
    """Stands in for the SQLite connection and fails writes after ``after`` of them, the way
    SQLite reports ENOSPC; reads and transaction control go to the real connection."""

    def __init__(self, conn: sqlite3.Connection, after: int) -> None:
        self._conn, self.after = conn, after

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            self.after -= 1
            if self.after < 0:
                raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args):
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_disk_full_is_a_clear_error_and_the_store_stays_readable(tmp_path):
    from nasir.runtime.driver import Driver

    folder = str(tmp_path / "run")
    exp = _tiny()
    st = RunStore.create(folder, exp.to_dict())
    real = st.conn
    st.conn = _FullDisk(real, after=12)  # type: ignore[assignment]
    with pytest.raises(StoreError) as e:
        Driver(st, exp).run()
    assert "disk is full" in str(e.value) and e.value.where and e.value.hint
    st.conn = real
    st.close()
    # the store is readable and consistent: a prefix of the run, then resume finishes it
    st = RunStore.open(folder)
    before = st.trials()
    st.close()
    assert before and all(t["status"] in ("done", "running", "pending") for t in before)
    from nasir.runtime.resume import resume_run

    s = resume_run(folder)
    assert s["counts"]["done"] == 6


def test_read_only_run_folder_is_a_clear_error_and_stays_readable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    folder = str(tmp_path / "run")
    run_search(_tiny(3), folder)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    os.chmod(os.path.join(folder, "run.sqlite"), stat.S_IRUSR)
    try:
        from nasir.runtime.resume import resume_run

        with pytest.raises(NasirError) as e:
            resume_run(folder, trials=5)
        assert "read-only" in str(e.value) or "cannot write" in str(e.value)
        st = RunStore.open(folder)
        assert len(st.trials()) == 3
        st.close()
    finally:
        os.chmod(folder, stat.S_IRWXU)
        os.chmod(os.path.join(folder, "run.sqlite"), stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 160 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_then_a_read_only_filesystem(tiny_fs, tmp_path):
    import subprocess

    from nasir.runtime.resume import resume_run

    n = 400
    folder = str(tiny_fs / "run")
    with pytest.raises(StoreError) as e:
        run_search(_tiny(n), folder)
    assert "disk is full" in str(e.value) and e.value.where and e.value.hint
    st = RunStore.open(folder)  # readable on the full disk
    kept = [t for t in st.trials() if t["status"] == "done"]
    st.close()
    assert 0 < len(kept) < n
    # room again: resume finishes the run with exactly the trials of an uninterrupted one
    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_fs)], check=True)
    resume_run(folder)
    ref = str(tmp_path / "ref")
    run_search(_tiny(n), ref)
    a, b = RunStore.open(folder), RunStore.open(ref)
    got = [(t["id"], t["hash"], t["status"], t["reward"]) for t in a.trials()]
    want = [(t["id"], t["hash"], t["status"], t["reward"]) for t in b.trials()]
    a.close()
    b.close()
    assert got == want
    # a read-only filesystem: a clear error, and every command that reads still works
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(StoreError) as e:
        resume_run(folder, trials=n + 5)
    assert "readonly" in str(e.value) or "read-only" in str(e.value)
    from nasir.commands.runs import run_summary

    assert run_summary(folder)["counts"]["done"] == n
