"""``kill -9`` of an ENAS run (two pool workers) once its shared weights have a checkpoint,
then ``nasir resume`` (in-process): the run ends with the trials, scores and job records
of an uninterrupted in-process one."""

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
from test_enas_runner import PLAN, _exp, _outcome

from nasir.runtime.driver import run_search
from nasir.runtime.store import RunStore


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, tuple]:
    folder = str(tmp_path_factory.mktemp("enas") / "run")
    assert run_search(_exp(), folder)["status"] == "finished"
    return folder, _outcome(folder)


@pytest.mark.slow
def test_kill_9_then_nasir_resume_ends_like_the_uninterrupted_run(tmp_path, reference):
    """``nasir search`` killed with SIGKILL once its first shared-weight epoch is stored
    (during epoch 0's controller steps or epoch 1's job), then ``nasir resume``."""
    cfg, folder = tmp_path / "enas.json", str(tmp_path / "run")
    # two pool workers: a step's children run at once, the next step waits for them
    # (AwaitFeedback); the reference ran in-process, one trial at a time
    cfg.write_text(json.dumps(_exp(executor={"kind": "pool", "workers": 2}).to_dict()))
    cli = [sys.executable, "-m", "nasir"]
    proc = subprocess.Popen([*cli, "search", "-c", str(cfg), "--run-dir", folder,
                             "--no-progress", "--no-report"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db, deadline, killed = os.path.join(folder, "run.sqlite"), time.time() + 120, False
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            con = read_only(db)
            try:
                steps = con.execute("SELECT COUNT(*) FROM job_steps").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            continue
        if steps >= 1:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait(30)
    assert killed, proc.stderr.read().decode() if proc.stderr else "no kill"
    st = RunStore.open(folder)
    try:
        assert st.meta("status") == "running" and len(st.trials()) < PLAN  # killed mid-run
    finally:
        st.close()
    done = subprocess.run([*cli, "resume", folder, "--executor", "inprocess", "--no-progress",
                           "--no-report"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _outcome(folder) == reference[1]
