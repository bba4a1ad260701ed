"""Faults injected into real runs: failing trials, a full disk, a read-only run folder.

The fault run uses :class:`nasir.runtime.faults.FaultEstimator` on a small NB201 network:
each fault goes through the real failure path (a raised exception, a NaN metric, the torch
backend's memory check, the pool's trial timeout, a real TVM compile error, a TVM RPC
connection to a closed port, a worker killed by SIGKILL) and must be recorded as a failed
trial with its reason while the run goes on.
"""

from __future__ import annotations

import os

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
    from nasir.runtime.estimators import fault_estimator
    from nasir.runtime.worker import build_space

    st = RunStore.open(folder)
    try:
        cfg, trials = st.config, st.trials()
    finally:
        st.close()
    space = build_space(cfg)
    est = fault_estimator(**cfg["estimator"]["options"])
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
    # the sleep fault's trial runs alone until its timeout: 20 s here (the benchmarks keep
    # 45) is still 5x the slowest real trial (a refused TVM RPC connection: 4 s, load 8)
    s = run_search(fault_experiment(executor={"kind": "pool", "workers": 2,
                                              "trial_timeout_s": 20}), folder)
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


def _same_trials_as_an_uninterrupted_run(folder: str, ref: str, n: int) -> None:
    run_search(_tiny(n), ref)
    a, b = RunStore.open(folder), RunStore.open(ref)
    got = [(t["id"], t["hash"], t["status"], t["reward"]) for t in a.trials()]
    want = [(t["id"], t["hash"], t["status"], t["reward"]) for t in b.trials()]
    a.close()
    b.close()
    assert got == want


def test_disk_full_is_a_clear_error_and_the_store_stays_readable(tmp_path):
    """SQLite's own full-database path (SQLITE_FULL, the code ENOSPC becomes): the store
    may grow by a few pages only (``PRAGMA max_page_count``), then the run must stop with
    a clear error, keep what it committed, and resume to the trials of an uninterrupted
    run once there is room again (a fresh connection has no page limit)."""
    from nasir.runtime.driver import Driver
    from nasir.runtime.resume import resume_run

    n = 400
    folder = str(tmp_path / "run")
    exp = _tiny(n)
    st = RunStore.create(folder, exp.to_dict())
    pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
    st.conn.execute(f"PRAGMA max_page_count = {pages + 8}")
    with pytest.raises(StoreError) as e:
        Driver(st, exp).run()
    st.close()
    assert "database or disk is full" in str(e.value) and e.value.where and e.value.hint
    st = RunStore.open(folder)
    kept = [t for t in st.trials() if t["status"] == "done"]
    st.close()
    assert 0 < len(kept) < n
    resume_run(folder)
    _same_trials_as_an_uninterrupted_run(folder, str(tmp_path / "ref"), n)


_LIMITED_RUN = """
import sys
from nasir.errors import StoreError
from nasir.runtime.driver import run_search
sys.path.insert(0, sys.argv[3])
from test_reliability_faults import _tiny
try:
    run_search(_tiny(int(sys.argv[2])), sys.argv[1])
    print("finished")
except StoreError as e:
    print("StoreError", str(e).splitlines()[0], "|", e.where, "|", e.hint)
"""


def test_a_file_size_limit_stops_the_run_cleanly(tmp_path):
    """The kernel refuses the store's writes: the run happens in a subprocess whose files may
    not grow past 150 kB (``RLIMIT_FSIZE``, binding for root too; SIGXFSZ ignored, so a
    write fails with EFBIG, or writes short). The run stops with a clear StoreError, the
    store stays readable, and resume (without the limit) gives the uninterrupted run."""
    import resource
    import signal
    import subprocess
    import sys

    from nasir.runtime.resume import resume_run

    def limit() -> None:  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_001, 150_001))

    n = 400
    folder = str(tmp_path / "run")
    r = subprocess.run([sys.executable, "-c", _LIMITED_RUN, folder, str(n),
                        os.path.dirname(__file__)], capture_output=True, text=True,
                       preexec_fn=limit, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()[-1]
    assert out.startswith("StoreError cannot write the run store: "), out
    assert "run.sqlite" in out and "free disk space" in out
    st = RunStore.open(folder)
    kept = [t for t in st.trials() if t["status"] == "done"]
    st.close()
    assert 0 < len(kept) < n
    resume_run(folder)
    _same_trials_as_an_uninterrupted_run(folder, str(tmp_path / "ref"), n)


def test_read_only_store_is_a_clear_error_and_stays_readable(tmp_path, monkeypatch):
    """The store opened the way SQLite opens a file it may not write (``mode=ro``: root
    ignores permission bits, so chmod cannot stand in): resuming is a clear error, and the
    commands that read still work."""
    import sqlite3
    import urllib.parse

    from nasir.commands.runs import run_summary
    from nasir.runtime.resume import resume_run

    folder = str(tmp_path / "run")
    run_search(_tiny(3), folder)
    real = RunStore._connect

    def read_only(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True,
                               timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    monkeypatch.setattr(RunStore, "_connect", staticmethod(read_only))
    with pytest.raises(NasirError) as e:
        resume_run(folder, trials=5)
    assert "readonly" in str(e.value) and "cannot write" in str(e.value)
    assert run_summary(folder)["counts"]["done"] == 3
    st = RunStore.open(folder)
    assert len(st.trials()) == 3
    st.close()
    monkeypatch.setattr(RunStore, "_connect", real)
    assert resume_run(folder, trials=5)["counts"]["done"] == 5


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 320 KiB tmpfs (root only; skipped where mounting is not allowed: the tests
    above emulate the same faults everywhere, this one is the extra on a real mount)."""
    import subprocess

    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)],
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
    _same_trials_as_an_uninterrupted_run(folder, str(tmp_path / "ref"), n)
    # a read-only filesystem: a clear error, and every command that reads still works
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(StoreError) as e:
        resume_run(folder, trials=n + 5)
    assert "readonly" in str(e.value) or "read-only" in str(e.value)
    from nasir.commands.runs import run_summary

    assert run_summary(folder)["counts"]["done"] == n
