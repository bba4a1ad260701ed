"""Which GPU a trial runs on: pool workers own one GPU each, Ray trials run on Ray's grant.

Everything but the last test runs on the CPU: the GPU assignment is a pure function, the pool
run injects a GPU count (its workers really start with the assigned environment, which they
report in the worker name the store keeps), and the Ray side is the function from Ray's GPU
ids to a device plus the remote trial body with a stand-in ``ray`` module.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from nasir.errors import NasirError
from nasir.runtime.driver import run_search
from nasir.runtime.executors import PoolExecutor, _ray_trial, make_executor
from nasir.runtime.experiment import ConfigError, Experiment
from nasir.runtime.gpus import (
    VISIBLE_ENV,
    WORKER_DEVICE_ENV,
    assign_gpus,
    default_workers,
    ray_device,
    ray_gpus_per_trial,
)
from nasir.runtime.store import RunStore
from nasir.runtime.worker import worker_name


def _visible(envs: list[dict[str, str]]) -> list[str | None]:
    return [e.get(VISIBLE_ENV) for e in envs]


@pytest.mark.parametrize(("gpus", "expected"), [
    (1, ["0", "0", "0", "0"]),
    (2, ["0", "1", "0", "1"]),
    (4, ["0", "1", "2", "3"]),
])
def test_pool_workers_take_gpus_round_robin(gpus, expected):
    for device in ("cuda", "auto"):
        envs = assign_gpus(4, device, gpus, visible="")
        assert _visible(envs) == expected
        assert {e[WORKER_DEVICE_ENV] for e in envs} == {"cuda:0"}


def test_cuda_n_pins_every_worker_to_gpu_n():
    assert _visible(assign_gpus(3, "cuda:2", 4, visible="")) == ["2", "2", "2"]
    # ids come from the driver's own CUDA_VISIBLE_DEVICES: its GPU 1 is physical GPU 7
    assert _visible(assign_gpus(2, "cuda:1", 2, visible="5,7")) == ["7", "7"]
    assert _visible(assign_gpus(3, "cuda", 2, visible="5, 7")) == ["5", "7", "5"]
    with pytest.raises(NasirError, match="cuda:4 names GPU 4 but 2 GPU"):
        assign_gpus(1, "cuda:4", 2)


def test_cpu_runs_get_no_gpu_environment():
    assert assign_gpus(2, "cpu", 4) == [{}, {}]
    assert assign_gpus(2, "mps", 4) == [{}, {}]
    assert assign_gpus(3, "auto", 0) == [{}, {}, {}]
    assert assign_gpus(2, "cuda", 0) == [{}, {}]  # the estimator says CUDA is missing


def test_default_workers_one_per_gpu_on_cuda():
    assert [default_workers("cuda", n) for n in (0, 1, 2, 4)] == [2, 1, 2, 4]
    assert default_workers("auto", 8) == 8
    assert default_workers("cuda:3", 8) == 1
    assert default_workers("cpu", 8) == default_workers("mps", 8) == 2


def test_executor_workers_unset_means_auto():
    assert Experiment().executor.workers is None
    assert Experiment.from_dict({"executor": {"workers": 3}}).executor.workers == 3
    with pytest.raises(ConfigError, match=r"executor\.workers"):
        Experiment.from_dict({"executor": {"workers": 0}})

    def slots(device: str, gpus: int, workers: int | None = None) -> list:
        exp = Experiment.from_dict({"device": device, "space": {"name": "nb201"},
                                    "estimator": {"kind": "nb201"},
                                    "executor": {"kind": "pool", "workers": workers}})
        ex = make_executor(exp.to_dict(), None, gpus=gpus)
        assert isinstance(ex, PoolExecutor)
        ex.close()  # nothing was spawned yet: workers start with the first trial
        return [ex.slots, _visible(ex.envs)]

    assert slots("auto", 4) == [4, ["0", "1", "2", "3"]]
    assert slots("cuda", 2, workers=3) == [3, ["0", "1", "0"]]
    assert slots("cuda:1", 2) == [1, ["1"]]
    assert slots("cpu", 4) == [2, [None, None]]
    assert slots("auto", 0) == [2, [None, None]]


def test_worker_name_says_which_gpu(monkeypatch):
    monkeypatch.setenv(VISIBLE_ENV, "3")
    monkeypatch.setenv(WORKER_DEVICE_ENV, "cuda:0")
    assert worker_name("pool").endswith(f":pool:{os.getpid()}:gpu3")
    monkeypatch.setenv(WORKER_DEVICE_ENV, "cpu")
    assert worker_name("pool").endswith(f":pool:{os.getpid()}")
    monkeypatch.delenv(WORKER_DEVICE_ENV)
    assert worker_name("ray").endswith(f":ray:{os.getpid()}")


def test_pool_workers_start_on_their_own_gpu(tmp_path):
    """A real pool (2 spawned workers, NB201 table) told there are 2 GPUs: each worker
    process starts with its own CUDA_VISIBLE_DEVICES and NASIR_WORKER_DEVICE=cuda:0, which it
    reports in the worker name each trial is stored with."""
    exp = Experiment.from_dict({
        "space": {"name": "nb201"},
        "estimator": {"kind": "nb201", "options": {"simulate_s": 0.2}},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "budget": {"trials": 6}, "seed": 1,
        "executor": {"kind": "pool"}})  # workers unset: one per GPU
    folder = str(tmp_path / "run")
    ex = make_executor(exp.to_dict(), folder, gpus=2)
    assert ex.slots == 2
    summary = run_search(exp, folder, executor=ex)
    assert summary["counts"]["done"] == 6
    st = RunStore.open(folder)
    workers = [t["worker"] for t in st.trials()]
    st.close()
    gpu_of: dict[str, str] = {}
    for w in workers:
        host_kind_pid, _, gpu = w.rpartition(":")
        assert ":pool:" in host_kind_pid and gpu.startswith("gpu"), w
        assert gpu_of.setdefault(host_kind_pid, gpu) == gpu, workers  # one GPU per process
    assert sorted(gpu_of.values()) == ["gpu0", "gpu1"], workers


def test_ray_trial_runs_where_ray_granted(monkeypatch):
    """The remote trial body: GPUs granted → cuda:0 (Ray's CUDA_VISIBLE_DEVICES), none → CPU."""
    assert ray_device([2], "cuda") == ray_device([0, 1], "auto") == "cuda:0"
    assert ray_device([], "cuda") == ray_device([], "auto") == "cpu"
    assert ray_device([1], "cpu") == "cpu" and ray_device([], "mps") == "mps"
    assert ray_gpus_per_trial("cuda", 0, 4) == ray_gpus_per_trial("auto", 0, 1) == 1.0
    assert ray_gpus_per_trial("cuda", 0, 0) == ray_gpus_per_trial("cpu", 0, 4) == 0.0
    assert ray_gpus_per_trial("cpu", 2, 4) == 2.0  # asked for: reserved (the trial uses CPU)

    from nasir.spaces import get_space

    exp = {"space": {"name": "nb201"}, "estimator": {"kind": "nb201"}, "device": "cuda"}
    task = {"trial": 1, "assignment": get_space("nb201").reference("resnet").to_json(),
            "seed": 0}
    granted: list[int] = [5]
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(get_gpu_ids=lambda: granted))
    monkeypatch.setenv(VISIBLE_ENV, "5")  # what Ray sets for a task granted GPU 5
    monkeypatch.setenv(WORKER_DEVICE_ENV, "unset")
    r = _ray_trial(exp, None, task)
    assert r["status"] == "done" and os.environ[WORKER_DEVICE_ENV] == "cuda:0"
    assert r["worker"].endswith(f":ray:{os.getpid()}:gpu5")
    granted.clear()
    r = _ray_trial(exp, None, task)
    assert os.environ[WORKER_DEVICE_ENV] == "cpu"
    assert r["worker"].endswith(f":ray:{os.getpid()}")


def _cuda_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_gpus() == 0, reason="needs a CUDA GPU; on a GPU machine: "
                    "pytest -m gpu tests/test_runtime_devices.py")
def test_pool_workers_see_one_real_gpu_each(tmp_path):
    """On a GPU machine: workers default to one per GPU and each sees exactly one GPU."""
    n = _cuda_gpus()
    exp = Experiment.from_dict({
        "space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "budget": {"trials": 2 * n}, "device": "cuda",
        "executor": {"kind": "pool"}})
    folder = str(tmp_path / "run")
    ex = make_executor(exp.to_dict(), folder)
    assert ex.slots == n
    run_search(exp, folder, executor=ex)
    st = RunStore.open(folder)
    workers = {t["worker"] for t in st.trials()}
    st.close()
    assert all(":gpu" in w for w in workers), workers


@pytest.mark.slow
def test_ray_trials_run_on_the_gpus_ray_grants(tmp_path):
    """A local Ray instance with 2 (logical) GPUs, one per trial: each remote trial runs with
    the CUDA_VISIBLE_DEVICES Ray set for it and NASIR_WORKER_DEVICE=cuda:0."""
    from nasir.runtime.executors import RayExecutor

    exp = Experiment.from_dict({
        "space": {"name": "nb201"},
        "estimator": {"kind": "nb201", "options": {"simulate_s": 0.2}},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "budget": {"trials": 4}, "seed": 2,
        "executor": {"kind": "ray", "workers": 2, "gpus_per_trial": 1}})
    folder = str(tmp_path / "run")
    ex = RayExecutor(exp.to_dict(), folder, workers=2, gpus_per_trial=1.0)
    assert ex.gpus_per_trial == 1.0
    summary = run_search(exp, folder, executor=ex)
    assert summary["counts"]["done"] == 4
    st = RunStore.open(folder)
    workers = [t["worker"] for t in st.trials()]
    st.close()
    assert all(":ray:" in w and w.rpartition(":")[2] in ("gpu0", "gpu1") for w in workers), \
        workers
