"""Trials as Ray tasks (:mod:`~nasir.runtime.executors`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.executor_base import Executor, _failed
from nasir.runtime.gpus import (
    DEFAULT_WORKERS,
    WORKER_DEVICE_ENV,
    default_workers,
    gpu_count,
    ray_device,
    ray_gpus_per_trial,
)
from nasir.runtime.worker import run_trial

__all__ = ["RayExecutor"]


def _ray_trial(exp: dict[str, Any], run_dir: str | None, task: dict[str, Any]) -> dict[str, Any]:
    import ray

    # Ray points CUDA_VISIBLE_DEVICES at the GPUs it granted this task (none: the CPU)
    os.environ[WORKER_DEVICE_ENV] = ray_device(ray.get_gpu_ids(),
                                               str(exp.get("device") or "auto"))
    return run_trial(exp, run_dir, task, "ray")


class RayExecutor(Executor):
    """Trials as Ray tasks with ``num_cpus`` / ``num_gpus`` each; ``address`` joins a cluster
    (``auto`` or ``ray://host:10001``), none starts a local instance with ``workers`` CPUs.

    Ray itself retries a task whose worker process died (``max_retries=retries``); after
    that the trial is failed with Ray's reason.

    A trial trains on the GPUs Ray grants it (``gpus_per_trial``; left at 0 on a CUDA run it
    is 1 when the cluster has GPUs, :func:`~nasir.runtime.gpus.ray_gpus_per_trial`), on the
    CPU when none. ``workers=None``: as many trials at once as the cluster's GPUs allow on a
    CUDA run, else 2.
    """

    def __init__(self, exp: Mapping[str, Any], run_dir: str | None = None,
                 workers: int | None = None, address: str | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 timeout_s: float | None = None, retries: int = 1) -> None:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a dependency
            raise NasirError("ray is not installed", hint="pip install ray") from e
        self.ray = ray
        self._owns = False
        device = str(exp.get("device") or "auto")
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                local = workers or default_workers(device, gpu_count(device))
                kwargs["num_cpus"] = max(1, round(local * cpus_per_trial))
                if gpus_per_trial:
                    kwargs["num_gpus"] = max(1, round(local * gpus_per_trial))
            try:
                ray.init(**kwargs)
            except Exception as e:
                raise NasirError(f"cannot start or join Ray: {e}".splitlines()[0],
                                 where=f"--address {address}" if address else None,
                                 hint="check the address (ray://HOST:10001 or auto) and that "
                                      "the cluster is up") from None
            self._owns = True
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        self.gpus_per_trial = ray_gpus_per_trial(device, gpus_per_trial, cluster_gpus)
        if workers is None and self.gpus_per_trial > 0 and cluster_gpus > 0:
            workers = max(1, int(cluster_gpus // self.gpus_per_trial))
        self.slots = int(workers or DEFAULT_WORKERS)
        self.timeout_s = timeout_s
        self._exp_ref = ray.put(dict(exp))
        self.run_dir = run_dir
        self._fn = ray.remote(_ray_trial).options(
            num_cpus=cpus_per_trial, num_gpus=self.gpus_per_trial, max_retries=int(retries),
            retry_exceptions=False)
        self._running: dict[Any, tuple[dict[str, Any], float]] = {}
        self.retries = int(retries)

    def submit(self, task: Mapping[str, Any]) -> None:
        """Start the trial as a Ray task."""
        t = dict(task)
        ref = self._fn.remote(self._exp_ref, self.run_dir, t)
        self._running[ref] = (t, time.monotonic())

    @property
    def pending(self) -> int:
        """Running Ray tasks."""
        return len(self._running)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Collect finished tasks; failed system tasks and timeouts become failed trials."""
        ray = self.ray
        out: list[dict[str, Any]] = []
        if not self._running:
            time.sleep(min(timeout, 0.05))
            return out
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        more, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        for ref in {*ready, *more}:
            task, t0 = self._running.pop(ref)
            try:
                r = ray.get(ref)
                r.setdefault("attempt", 1)
                out.append(r)
            except ray.exceptions.RayError as e:
                first = str(e).strip().splitlines()
                out.append(_failed(task, f"ray worker died on all {self.retries + 1} attempts: "
                                         f"{type(e).__name__}: {first[0] if first else ''}",
                                   "ray", time.monotonic() - t0))
        if self.timeout_s is not None:
            now = time.monotonic()
            for ref, (task, t0) in list(self._running.items()):
                if now - t0 >= self.timeout_s:
                    ray.cancel(ref, force=True)
                    del self._running[ref]
                    out.append(_failed(task, f"timeout after {self.timeout_s:g} s", "ray",
                                       now - t0))
        return out

    def close(self) -> None:
        """Cancel what still runs; shut Ray down if this executor started it."""
        for ref in list(self._running):
            with contextlib.suppress(Exception):  # already finished or gone
                self.ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns:
            self.ray.shutdown()
