"""Strategy option ``workers``: a one-shot search under the runner trains its supernet epochs
in 2 processes and stores the same job (per-epoch losses and architecture weights, within
float rounding) and the same derived child as with 1 (issue 22). The search is the paper's
DARTS (second order: every gradient of its unrolled step is averaged across the ranks)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from nasir.cli import main
from nasir.errors import NasirError
from nasir.runtime.data_parallel import strip_workers
from nasir.runtime.store import RunStore
from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.oneshot.data_parallel import DataParallelJob

TINY = ["--space", "nb201", "--space-opt", "input_shape=[1,8,8]", "--space-opt",
        "channels=4", "--space-opt", "cells_per_stage=1"]
DARTS = ["--strategy", "darts", "--strategy-opt", "epochs=2", "--strategy-opt",
         "data_fraction=0.1", "--strategy-opt", "batch_size=32", "--seed", "3"]


def _run(run: str, *extra: str) -> dict[str, Any]:
    assert main(["search", *TINY, *DARTS, "--reward", "accuracy", "--objective",
                 "accuracy:max", "--latency", "off", "--executor", "inprocess", "--trials", "1",
                 "--estimator", "nb201", "--run-dir", run, "--no-progress", "--no-report",
                 *extra]) == 0
    st = RunStore.open(run)
    try:
        return {"steps": [s["record"] for s in st.job_steps()],
                "trials": [t["assignment"] for t in st.trials()]}
    finally:
        st.close()


@pytest.mark.slow
def test_two_workers_store_the_same_search_as_one(tmp_path) -> None:
    one = _run(str(tmp_path / "one"))
    two = _run(str(tmp_path / "two"), "--strategy-opt", "workers=2")
    assert [r.get("workers") for r in two["steps"]] == [2, 2]
    assert len(one["steps"]) == len(two["steps"]) == 2
    for a, b in zip(one["steps"], two["steps"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5
        assert a["derived"] == b["derived"]
        for k in a["probs"]:
            assert max(abs(x - y) for x, y in zip(a["probs"][k], b["probs"][k])) < 1e-5
    assert one["trials"] == two["trials"]


def _job(name: str) -> Any:
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    return make_strategy(name, sp, seed=0, epochs=1, data_fraction=0.05).job()


def test_bad_workers_and_jobs_that_cannot_train_data_parallel_are_refused() -> None:
    with pytest.raises(NasirError, match="workers must be an integer >= 1"):
        DataParallelJob(_job("darts"), functools.partial(_job, "darts"), 0)
    with pytest.raises(NasirError, match=r"strategy\.options\.workers"):
        strip_workers({"workers": "2"})
    with pytest.raises(NasirError, match="cannot train data-parallel"):
        DataParallelJob(_Other(), _Other, 2)


class _Other:
    """A job that is not a supernet job."""

    name, total_steps, steps_done = "other", 1, 0
