"""DARTS, FBNet and ProxylessNAS under the runner: the supernet search is a job of the run
(stored per epoch, resumable after ``kill -9``), then the derived children are trials."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any, ClassVar

import pytest
from _sqlite_poll import read_only

from nasir.cli import main
from nasir.errors import NasirError
from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.report import write_report
from nasir.runtime.store import RunStore
from nasir.space import Assignment
from nasir.strategies.base import register_strategy
from nasir.strategies.random_search import RandomSearch

TINY = ["--space", "nb201", "--space-opt", "input_shape=[1,8,8]", "--space-opt",
        "channels=4", "--space-opt", "cells_per_stage=1"]
#: a DARTS search of a few short epochs (first order: the second order's unrolled step
#: costs 4x and resumes through the same optimiser and schedule states)
DARTS = ["--strategy", "darts", "--strategy-opt", "epochs=4", "--strategy-opt", "order=1",
         "--strategy-opt", "data_fraction=0.25", "--strategy-opt", "batch_size=32",
         "--seed", "3"]

#: the run's estimator: training, one short epoch
TRAIN = ["--estimator", "training", "--estimator-opt", "epochs=1", "--estimator-opt",
         "data_fraction=0.2"]


def _search(run: str, *extra: str) -> list[str]:
    return ["search", *TINY, *DARTS, "--reward", "accuracy", "--objective", "accuracy:max",
            "--latency", "off", "--executor", "inprocess", "--trials", "4",
            "--run-dir", run, "--no-progress", "--no-report", *extra]


def _stored(run: str) -> dict[str, Any]:
    st = RunStore.open(run)
    try:
        return {"steps": st.job_steps(), "events": st.events(), "trials": st.trials(),
                "exhausted": st.meta("exhausted")}
    finally:
        st.close()


@pytest.fixture(scope="module")
def darts_run(tmp_path_factory) -> tuple[str, dict[str, Any]]:
    """An uninterrupted ``nasir search --strategy darts``; children trained (1 epoch)."""
    run = str(tmp_path_factory.mktemp("darts") / "run")
    assert main(_search(run, *TRAIN)) == 0
    return run, _stored(run)


def test_darts_search_is_one_job_then_the_derived_child_is_a_trial(darts_run):
    run, got = darts_run
    steps = got["steps"]
    assert [r["step"] for r in steps] == list(range(4)) and {r["name"] for r in steps} == \
        {"supernet"}
    assert all(set(r["record"]) >= {"loss", "probs", "derived", "epoch"} for r in steps)
    jobs = [e for e in got["events"] if e["event"] == "job"]
    assert len(jobs) == 1
    derived = jobs[0]["result"]["assignment"]
    # top_k=1: one trial, the derived child, evaluated by the run's estimator; then the end
    assert [(t["assignment"], t["status"]) for t in got["trials"]] == [(derived, "done")]
    assert 0.0 <= got["trials"][0]["metrics"]["accuracy"] <= 1.0
    assert "derived children" in got["exhausted"]
    assert os.path.exists(os.path.join(run, "jobs", "supernet.pt"))


def test_report_shows_the_job_and_the_alpha_evolution(darts_run, tmp_path):
    run, _ = darts_run
    with open(write_report(run, str(tmp_path))) as fh:
        md = fh.read()
    assert "## Search job" in md and "job `supernet`: 4 epochs" in md
    assert "derived architecture:" in md and "(the derived child)" in md
    assert (tmp_path / "supernet_alphas.png").stat().st_size > 1000


def _rows(db: str) -> list[tuple]:
    try:
        con = read_only(db)
        try:
            return con.execute("SELECT step, at FROM job_steps ORDER BY step").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def test_kill_9_mid_search_then_resume_continues_from_the_last_epoch(tmp_path, darts_run):
    _, ref = darts_run
    run = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "nasir",
                             *_search(run, *TRAIN)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = os.path.join(run, "run.sqlite")
    deadline = time.time() + 240
    while len(_rows(db)) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(db)
    err = proc.stderr.read() if proc.stderr is not None else b""
    assert 1 <= len(before) < 4, f"killed at {len(before)} epochs; {err!r}"
    assert not [e for e in _stored(run)["events"] if e["event"] == "job"]
    assert main(["resume", run, "--no-progress", "--no-report"]) == 0
    got = _stored(run)
    # the epochs stored before the kill were not run again (same rows, same times: a
    # restart at epoch 0 would have rewritten them) ...
    assert _rows(db)[:len(before)] == before
    # ... and the run ends as the uninterrupted one: same epochs, same derived child
    assert [r["record"] for r in got["steps"]] == [r["record"] for r in ref["steps"]]
    assert [t["assignment"] for t in got["trials"]] == [t["assignment"] for t in ref["trials"]]
    assert _job_results(got["events"]) == _job_results(ref["events"])


def _job_results(events: list[dict]) -> list[dict]:
    """The job events' results but for the measured wall time."""
    return [{k: v for k, v in e["result"].items() if k != "wall_s"}
            for e in events if e["event"] == "job"]


ROWS = {f"edge_{i}_{j}": [1.0, 1.0, 50.0, 90.0, 20.0]
        for i, j in ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))}


@pytest.mark.parametrize("name", ["fbnet", "proxylessnas"])
def test_latency_searches_run_as_a_job_then_top_k_distinct_children(name, tmp_path):
    exp = Experiment.from_dict({
        "space": {"name": "nb201", "options": {"input_shape": [1, 8, 8], "channels": 4,
                                               "cells_per_stage": 1}},
        "estimator": {"kind": "nb201"},
        "strategy": {"name": name, "options": {
            "epochs": 3, "warmup": 1, "data_fraction": 0.2, "latency_rows": ROWS,
            "top_k": 3}},
        "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max"},
        "executor": {"kind": "inprocess"}, "budget": {"trials": 10}, "seed": 1})
    run = str(tmp_path / "run")
    summary = run_search(exp, run)
    got = _stored(run)
    assert [r["step"] for r in got["steps"]] == [0, 1, 2]
    assert all("expected_latency_us" in r["record"] and "probs" in r["record"]
               for r in got["steps"])
    job = next(e for e in got["events"] if e["event"] == "job")
    trials = got["trials"]
    assert summary["counts"]["done"] == 3 and len({t["hash"] for t in trials}) == 3
    assert trials[0]["assignment"] == job["result"]["assignment"]
    assert job["result"]["extra"]["variant"] == name


class RepeatOne(RandomSearch):
    """A strategy that promises distinct proposals and breaks the promise."""

    name: ClassVar[str] = "repeat_one"
    distinct_proposals: ClassVar[bool] = True

    def _propose(self, n: int) -> list[Assignment]:
        return [self.space.reference("resnet")] * n


register_strategy("repeat_one", f"{__name__}:RepeatOne")


def test_duplicate_proposals_of_a_one_shot_strategy_are_refused(tmp_path):
    exp = Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
        "strategy": {"name": "repeat_one"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
        "budget": {"trials": 3}})
    with pytest.raises(NasirError, match="strategy repeat_one proposed an architecture "
                                         "already proposed in this run") as e:
        run_search(exp, str(tmp_path / "run"))
    assert "top_k" in (e.value.hint or "")
    trials = RunStore.open(str(tmp_path / "run")).trials()
    assert len(trials) == 1  # the first proposal ran; the repeat never became a trial


def test_the_supernet_trains_on_the_run_data():
    """The strategy's job takes the data the driver hands it (the run's ``--data``), not
    digits: 40 training images in batches of 8 are 3 batches a half."""
    import torch
    from torch.utils.data import TensorDataset

    from nasir.backends.torch.data import DataSplits
    from nasir.spaces import get_space
    from nasir.strategies import make_strategy

    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 10)
    splits = DataSplits(ds, ds, ds, 10, (1, 8, 8), name="mine")
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    s = make_strategy("darts", sp, seed=0, epochs=1, batch_size=8, order=1)
    s.use_run_data(lambda: splits)
    job = s.job()
    assert job is not None and len(job.data.train_w) == len(job.data.train_a) == 3
    assert job.step()["epoch"] == 0


@pytest.mark.parametrize("name", ["darts", "darts_pt", "fbnet_gdas", "proxylessnas_penalty"])
def test_every_variant_resumes_bit_identically_from_a_checkpoint(name, tmp_path):
    """Epoch 1 checkpointed (through ``torch.save`` / ``weights_only`` load) into a fresh
    job: the remaining epochs and the derived result equal the uninterrupted job's."""
    from nasir.runtime.jobs import load_checkpoint, save_checkpoint
    from nasir.spaces import get_space
    from nasir.strategies import make_strategy

    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    # 81 images: halves of 40 / 41, so 2 weight and 3 architecture batches a pass — the
    # architecture half's pass does not end with the epoch, and its position must travel
    opts: dict[str, Any] = {"epochs": 3, "warmup": 0, "data_fraction": 81 / 1079,
                            "batch_size": 20}
    if name.startswith(("fbnet", "proxyless")):
        opts["latency_rows"] = ROWS
    if name == "darts_pt":
        opts |= {"pt_tune_steps": 1, "pt_images": 32}

    def job() -> Any:
        j = make_strategy(name, sp, seed=2, **opts).job()
        assert j is not None
        return j

    whole = job()
    records = [whole.step() for _ in range(3)]
    first = job()
    first.step()
    path = str(tmp_path / "j.pt")
    save_checkpoint(path, {"state": first.state_dict()})
    ckpt = load_checkpoint(path)
    assert ckpt is not None
    resumed = job()
    resumed.load_state_dict(ckpt["state"])
    assert [resumed.step() for _ in range(2)] == records[1:]
    drop = ("wall_s",)
    assert {k: v for k, v in resumed.result().items() if k not in drop} == \
        {k: v for k, v in whole.result().items() if k not in drop}
