"""The driver runs a strategy's search job: checkpointed per step, recorded, resumed."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest
import torch

from nasir.errors import NasirError
from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.jobs import checkpoint_path, load_checkpoint, save_checkpoint
from nasir.runtime.resume import resume_run
from nasir.runtime.store import RunStore
from nasir.strategies.base import register_strategy
from nasir.strategies.jobs import SearchJob
from nasir.strategies.random_search import RandomSearch

#: the step at which the toy job raises (None: never) — a crash in the middle of the job
CRASH_AT: list[int | None] = [None]


class ToyJob(SearchJob):
    """A seeded random walk of a weight vector: its RNG state must survive a resume."""

    name, total_steps = "toy", 5

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)
        self.w = torch.zeros(4)

    def _step(self) -> dict[str, Any]:
        if CRASH_AT[0] == self.steps_done:
            raise RuntimeError("crash in the job")
        self.w = self.w + torch.randn(4, generator=self.gen)
        return {"loss": float(self.w.pow(2).sum())}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "w": self.w, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.w = state["w"].clone()
        self.gen.set_state(state["gen"])

    def result(self) -> dict[str, Any]:
        return {"w": self.w.tolist()}


class ToyJobStrategy(RandomSearch):
    """Random search that first runs one :class:`ToyJob`."""

    name: ClassVar[str] = "toy_job"
    built: ClassVar[list[int]] = []

    def job(self) -> SearchJob | None:
        if any(e["event"] == "job" for e in self.history):
            return None
        ToyJobStrategy.built.append(1)
        return ToyJob(self.seed)


register_strategy("toy_job", f"{__name__}:ToyJobStrategy")


def _exp(trials: int = 3) -> Experiment:
    return Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
        "strategy": {"name": "toy_job"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
        "budget": {"trials": trials}, "seed": 5})


def _outcome(folder: str) -> tuple[list, list, list]:
    st = RunStore.open(folder)
    try:
        steps = [(r["step"], r["record"]["loss"]) for r in st.job_steps("toy")]
        jobs = [e for e in st.events() if e["event"] == "job"]
        trials = [(t["hash"], t["status"]) for t in st.trials()]
    finally:
        st.close()
    return steps, jobs, trials


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list, list, list]:
    folder = str(tmp_path_factory.mktemp("ref") / "run")
    run_search(_exp(), folder)
    return _outcome(folder)


def test_job_runs_before_the_first_proposal_and_is_stored(reference):
    steps, jobs, trials = reference
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4]
    assert len(jobs) == 1 and len(jobs[0]["result"]["w"]) == 4
    assert len(trials) == 3 and all(s == "done" for _, s in trials)


def test_crash_mid_job_resumes_from_the_checkpoint_and_ends_the_same(tmp_path, reference):
    folder = str(tmp_path / "run")
    CRASH_AT[0] = 3
    try:
        with pytest.raises(RuntimeError, match="crash in the job"):
            run_search(_exp(), folder)
    finally:
        CRASH_AT[0] = None
    ckpt = load_checkpoint(checkpoint_path(folder, "toy"))
    assert ckpt is not None and ckpt["state"]["steps_done"] == 3
    # a kill between the checkpoint and its row: the row of step 2 never reached the store
    st = RunStore.open(folder)
    st.conn.execute("DELETE FROM job_steps WHERE step=2")
    st.close()
    CRASH_AT[0] = 0  # a restart from step 0 would crash: the resume must not redo step 0
    try:
        resume_run(folder)
    finally:
        CRASH_AT[0] = None
    assert _outcome(folder) == reference


def test_rows_beyond_the_checkpoint_are_dropped_and_done_jobs_not_rerun(tmp_path, reference):
    folder = str(tmp_path / "run")
    run_search(_exp(trials=1), folder)
    st = RunStore.open(folder)
    st.add_job_step("toy", 9, {"loss": -1.0})  # a row no checkpoint has
    st.close()
    path = checkpoint_path(folder, "toy")
    ckpt = load_checkpoint(path)
    assert ckpt is not None
    ckpt["state"]["steps_done"] = 4
    save_checkpoint(path, ckpt)  # as if killed before the last step
    # the finished job is in the events: the resumed run asks for no job at all
    before = len(ToyJobStrategy.built)
    resume_run(folder, trials=3)
    assert len(ToyJobStrategy.built) == before
    steps, jobs, _ = _outcome(folder)
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4, 9] and len(jobs) == 1


def test_checkpoints_are_atomic_and_torn_files_are_clear_errors(tmp_path):
    path = str(tmp_path / "jobs" / "x.pt")
    save_checkpoint(path, {"state": {"steps_done": 1, "t": torch.ones(2)}})
    assert os.listdir(tmp_path / "jobs") == ["x.pt"]
    with open(path, "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(NasirError, match="cannot read the job checkpoint"):
        load_checkpoint(path)
    with pytest.raises(NasirError, match="bad search job name"):
        checkpoint_path(str(tmp_path), "../escape")


def test_the_console_shows_a_job_progress_bar():
    import io

    from rich.console import Console

    from nasir.runtime.console import ProgressCallback

    buf = io.StringIO()
    cb = ProgressCallback(Console(file=buf, width=120, force_terminal=False))
    cb("start", {"total": 3, "done": 0})
    cb("job_start", {"name": "supernet", "total": 4, "done": 1, "resumed": True})
    for k in (2, 3, 4):
        cb("job_step", {"name": "supernet", "total": 4, "done": k,
                        "record": {"step": k - 1, "loss": 2.5 - k / 10}})
    cb("job_end", {"name": "supernet", "total": 4, "result": {}})
    cb("end", {})
    out = buf.getvalue()
    assert "job supernet (resumed)" in out and "4/4" in out and "loss 2.1000" in out
