"""Executors run trials: in this process, in a local pool of worker processes, or on Ray.

All three share one small interface: ``submit(task)``, ``poll(timeout) -> results``,
``pending``, ``slots`` and ``close()``. A task is ``{"trial", "assignment", "seed"}``; a
result is what :func:`nasir.runtime.worker.run_trial` returns plus ``attempt``. Only the
driver writes the run store; executors just hand results back.

A worker that dies (killed, out of memory, segfault) has its trial retried once on a fresh
worker, then the trial is marked failed with the reason. A trial over ``timeout_s`` is
stopped and failed (not retried: it would time out again).

On a CUDA run each pool worker owns one GPU (``CUDA_VISIBLE_DEVICES``, round-robin) and a
Ray trial trains on the GPUs Ray grants it (:mod:`nasir.runtime.gpus`); the worker name
recorded with a trial then ends in ``:gpuI``.

>>> exp = {"space": {"name": "nb201"}, "estimator": {"kind": "nb201"}}
>>> from nasir.spaces import get_space
>>> a = get_space("nb201").reference("resnet").to_json()
>>> ex = InProcessExecutor(exp)
>>> ex.submit({"trial": 1, "assignment": a, "seed": 0})
>>> [r["status"] for r in ex.poll(1.0)], ex.pending
(['done'], 0)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.executor_base import Executor, _failed
from nasir.runtime.executor_pool import PoolExecutor
from nasir.runtime.executor_pool import _die_with_parent as _die_with_parent  # latency_service
from nasir.runtime.executor_ray import RayExecutor
from nasir.runtime.executor_ray import _ray_trial as _ray_trial  # tests import it from here
from nasir.runtime.worker import run_trial, worker_name

__all__ = ["EXECUTORS", "Executor", "InProcessExecutor", "PoolExecutor", "RayExecutor",
           "make_executor"]

EXECUTORS = ("inprocess", "pool", "ray")

class _Alarm(BaseException):  # not an Exception: trial code must not swallow it
    pass


class InProcessExecutor(Executor):
    """Runs each trial in the driver's own process (simplest; no isolation).

    ``timeout_s`` is enforced with ``SIGALRM`` when running on the main thread.
    """

    def __init__(self, exp: Mapping[str, Any], run_dir: str | None = None,
                 timeout_s: float | None = None) -> None:
        self.exp = dict(exp)
        self.run_dir = run_dir
        self.timeout_s = timeout_s
        self.slots = 1
        self._queue: deque[dict[str, Any]] = deque()

    def pids(self) -> list[int]:
        """This process: trials run in it."""
        return [os.getpid()]

    def submit(self, task: Mapping[str, Any]) -> None:
        """Queue the trial (it runs in :meth:`poll`)."""
        self._queue.append(dict(task))

    @property
    def pending(self) -> int:
        """Queued trials."""
        return len(self._queue)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Run one queued trial to completion."""
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        task = self._queue.popleft()
        use_alarm = (self.timeout_s is not None and hasattr(signal, "SIGALRM")
                     and threading.current_thread() is threading.main_thread())
        if not use_alarm:
            return [run_trial(self.exp, self.run_dir, task, "inprocess")]

        def _raise(signum, frame):
            raise _Alarm()

        old = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, float(self.timeout_s or 0))
        t0 = time.perf_counter()
        try:
            return [run_trial(self.exp, self.run_dir, task, "inprocess")]
        except _Alarm:
            return [_failed(task, f"timeout after {self.timeout_s:g} s", worker_name("inprocess"),
                            time.perf_counter() - t0)]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def make_executor(exp: Mapping[str, Any], run_dir: str | None = None, *,
                  gpus: int | None = None) -> Executor:
    """The executor an experiment dict asks for (``gpus``: the GPU count a pool assigns
    from, instead of the one CUDA reports — tests give one on machines without a GPU)."""
    ex = dict(exp.get("executor") or {})
    kind = ex.get("kind", "pool")
    timeout = ex.get("trial_timeout_s")
    workers = None if ex.get("workers") is None else int(ex["workers"])
    if kind == "inprocess":
        return InProcessExecutor(exp, run_dir, timeout)
    if kind == "pool":
        return PoolExecutor(exp, run_dir, workers, timeout,
                            threads=max(1, int(ex.get("cpus_per_trial", 1))), gpus=gpus)
    if kind == "ray":
        return RayExecutor(exp, run_dir, workers, ex.get("address"),
                           float(ex.get("cpus_per_trial", 1.0)),
                           float(ex.get("gpus_per_trial", 0.0)), timeout)
    raise NasirError(f"unknown executor {kind!r}", where="--executor",
                     hint=f"valid values: {', '.join(EXECUTORS)}")
