"""A real search through a local Ray instance (loopback only, 2 CPUs).

Ray is a dependency of nasir, so the test imports it directly: a missing or broken Ray
fails here instead of skipping.
"""

from __future__ import annotations

from collections import Counter

import pytest
import ray

from nasir.runtime.driver import run_search
from nasir.runtime.executors import RayExecutor
from nasir.runtime.experiment import Experiment
from nasir.runtime.store import RunStore


@pytest.mark.slow
def test_search_through_a_local_ray_instance(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        d = {"space": {"name": "nb201"},
             "estimator": {"kind": "nb201", "options": {"simulate_s": 0.1}},
             "strategy": {"name": "evolution", "options": {"population": 4, "sample": 2}},
             "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max", "params": "min"},
             "executor": {"kind": "ray", "workers": 2, "cpus_per_trial": 1},
             "budget": {"trials": 10}, "seed": 5}
        exp = Experiment.from_dict(d)
        folder = str(tmp_path / "ray")
        s = run_search(exp, folder, executor=RayExecutor(exp.to_dict(), folder, workers=2))
        assert s["counts"]["done"] == 10
        st = RunStore.open(folder)
        trials = st.trials()
        st.close()
        assert all(":ray:" in t["worker"] for t in trials)
        # two trials at a time on 2 CPUs, 0.1 s each: two Ray worker processes (recorded
        # as host:ray:pid) must each have run trials
        per_worker = Counter(t["worker"] for t in trials)
        assert len(per_worker) >= 2, per_worker
        # the same seeded search in-process gives the same trials (only the driver decides)
        local = Experiment.from_dict({**d, "executor": {"kind": "pool", "workers": 2}})
        s2 = run_search(local, str(tmp_path / "pool"))
        st2 = RunStore.open(str(tmp_path / "pool"))
        again = st2.trials()
        st2.close()
        assert [(t["hash"], t["reward"]) for t in again] == \
            [(t["hash"], t["reward"]) for t in trials]
        assert s2["best"]["reward"] == s["best"]["reward"]
        # a task whose Ray worker dies is retried by Ray, then failed with the reason
        ex = RayExecutor({"space": {"name": "nb201"}, "estimator": {"kind": "nb201"}}, None,
                         workers=1, retries=1)

        def die():  # a nested function travels by value to the Ray worker
            import os

            os._exit(1)

        ref = ray.remote(die).options(max_retries=1).remote()
        ex._running[ref] = ({"trial": 99, "assignment": {}, "seed": 0}, 0.0)
        out: list = []
        while not out:
            out = ex.poll(5.0)
        assert out[0]["status"] == "failed" and "ray worker died" in out[0]["error"]
        # a Ray worker killed (SIGKILL) mid-trial inside a real run: Ray retries the trial
        # once, then it is failed with the reason, and the run finishes (issue 11)
        fd = {**d, "estimator": {"kind": "fault", "options": {"faults": {"kill": 0.25}}},
              "strategy": {"name": "random"}, "budget": {"trials": 6}, "seed": 0}
        fexp = Experiment.from_dict(fd)
        ffolder = str(tmp_path / "ray_kill")
        fs = run_search(fexp, ffolder, executor=RayExecutor(fexp.to_dict(), ffolder, workers=2))
        assert fs["status"] == "finished" and fs["counts"]["failed"] == 1, fs["counts"]
        assert fs["counts"]["done"] == 5
        st3 = RunStore.open(ffolder)
        killed = [t for t in st3.trials() if t["status"] == "failed"]
        st3.close()
        assert "ray worker died on all 2 attempts" in killed[0]["error"]
    finally:
        ray.shutdown()

