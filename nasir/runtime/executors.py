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

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import wait as mp_wait
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.gpus import (
    DEFAULT_WORKERS,
    WORKER_DEVICE_ENV,
    assign_gpus,
    default_workers,
    gpu_count,
    ray_device,
    ray_gpus_per_trial,
)
from nasir.runtime.worker import run_trial, worker_name

__all__ = ["EXECUTORS", "Executor", "InProcessExecutor", "PoolExecutor", "RayExecutor",
           "make_executor"]

EXECUTORS = ("inprocess", "pool", "ray")
#: seconds a fresh pool worker may take to start (imports) before its trial's clock runs
STARTUP_S = 120.0


class Executor:
    """Base: ``slots`` trials may run at once."""

    slots: int = 1

    def submit(self, task: Mapping[str, Any]) -> None:
        """Queue one trial."""
        raise NotImplementedError

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` seconds and return the results that finished."""
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Trials submitted and not yet returned."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop workers."""

    def pids(self) -> list[int]:
        """The processes trials run in here (none known: Ray)."""
        return []


def _failed(task: Mapping[str, Any], reason: str, worker: str | None,
            eval_s: float | None = None) -> dict[str, Any]:
    return {"trial": task["trial"], "status": "failed", "metrics": {}, "error": reason,
            "worker": worker, "attempt": int(task.get("attempt", 1)), "eval_s": eval_s}


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


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the driver dies (even by ``kill -9``),
    so an orphaned worker does not keep training while the run is resumed."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before the line above ran
        os._exit(1)


def _pool_worker(conn: Any, exp: dict[str, Any], run_dir: str | None, threads: int,
                 parent: int, env: dict[str, str] | None = None) -> None:
    os.environ.update(env or {})  # this worker's GPU, before anything here initialises CUDA
    _die_with_parent(parent)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
        os.environ[var] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop
    with contextlib.suppress(Exception):  # build space + estimator before any trial's clock
        from nasir.runtime.worker import _context  # runs; a failure is reported per trial

        _context(exp, run_dir)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:  # the trial's clock starts now, not while this worker was still starting up
            conn.send({"started": task.get("trial")})
        except (BrokenPipeError, OSError):
            return
        result = run_trial(exp, run_dir, task, "pool")
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):  # the driver is gone
            return


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Any = None
        self.conn: Any = None
        self.task: dict[str, Any] | None = None
        self.started = 0.0
        self.begun = False  # the worker said it started the trial (startup is not timed)


class PoolExecutor(Executor):
    """A pool of ``workers`` long-lived local processes (spawned), one trial each at a time.

    Each worker builds the space and estimator once. The driver watches each worker's pipe
    and process sentinel, so it knows exactly which trial a dead worker was running.

    On a CUDA run (the experiment's ``device``; ``gpus`` GPUs, counted here when not given)
    worker ``i`` — and any worker that replaces it — owns GPU ``i`` mod ``gpus``, and
    ``workers=None`` means one worker per GPU (:func:`~nasir.runtime.gpus.default_workers`).
    """

    def __init__(self, exp: Mapping[str, Any], run_dir: str | None = None,
                 workers: int | None = None, timeout_s: float | None = None, retries: int = 1,
                 threads: int = 1, gpus: int | None = None) -> None:
        self.exp = dict(exp)
        self.run_dir = run_dir
        device = str(self.exp.get("device") or "auto")
        if gpus is None:
            gpus = gpu_count(device)
        self.slots = int(workers) if workers is not None else default_workers(device, gpus)
        #: the environment each worker slot starts with (its GPU; empty on the CPU)
        self.envs = assign_gpus(self.slots, device, gpus)
        self.timeout_s = timeout_s
        self.retries = int(retries)
        self.threads = max(1, int(threads))
        self._ctx = mp.get_context("spawn")
        self._slots = [_Slot(k) for k in range(self.slots)]
        self._queue: deque[dict[str, Any]] = deque()
        self.deaths = 0

    def _spawn(self, s: _Slot) -> None:
        parent, child = self._ctx.Pipe()
        s.proc = self._ctx.Process(target=_pool_worker, name=f"nasir-worker-{s.index}",
                                   args=(child, self.exp, self.run_dir, self.threads,
                                         os.getpid(), self.envs[s.index]),
                                   daemon=True)
        s.proc.start()
        child.close()
        s.conn = parent

    def _kill(self, s: _Slot) -> None:
        if s.proc is not None and s.proc.is_alive():
            s.proc.kill()
        if s.proc is not None:
            s.proc.join(5)
        if s.conn is not None:
            s.conn.close()
        s.proc = s.conn = None

    def pids(self) -> list[int]:
        """The live worker processes."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.is_alive()]

    def submit(self, task: Mapping[str, Any]) -> None:
        """Queue a trial; it starts as soon as a worker is free."""
        t = dict(task)
        t.setdefault("attempt", 1)
        self._queue.append(t)
        self._dispatch()

    def _dispatch(self) -> None:
        for s in self._slots:
            if not self._queue:
                return
            if s.task is not None:
                continue
            if s.proc is None or not s.proc.is_alive():
                self._kill(s)
                self._spawn(s)
            task = self._queue.popleft()
            try:
                s.conn.send(task)
            except (BrokenPipeError, OSError):
                self._queue.appendleft(task)
                self._kill(s)
                continue
            s.task, s.started, s.begun = task, time.monotonic(), False

    @property
    def pending(self) -> int:
        """Queued plus running trials."""
        return len(self._queue) + sum(s.task is not None for s in self._slots)

    def _died(self, s: _Slot, out: list[dict[str, Any]]) -> None:
        task = s.task or {}
        code = s.proc.exitcode if s.proc is not None else None
        if code is None and s.proc is not None:
            s.proc.join(1)
            code = s.proc.exitcode
        who = f"pool worker {s.index} (pid {s.proc.pid if s.proc else '?'})"
        self._kill(s)
        s.task = None
        self.deaths += 1
        attempt = int(task.get("attempt", 1))
        if attempt <= self.retries:
            self._queue.appendleft({**task, "attempt": attempt + 1})
        else:
            out.append(_failed(task, f"worker died (exit code {code}) on all {attempt} "
                                     f"attempts", who))

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Collect finished trials, retry those whose worker died, stop timed-out ones."""
        out: list[dict[str, Any]] = []
        self._dispatch()
        busy = [s for s in self._slots if s.task is not None]
        if not busy:
            time.sleep(min(timeout, 0.05))
            return out
        wait_s = timeout
        if self.timeout_s is not None:
            now = time.monotonic()
            wait_s = max(0.0, min(timeout, min(s.started + self.timeout_s - now for s in busy)))
        ready = set(mp_wait([s.conn for s in busy] + [s.proc.sentinel for s in busy],
                            timeout=wait_s))
        now = time.monotonic()
        for s in busy:
            result, eof = None, False
            try:
                while result is None and s.conn.poll():
                    msg = s.conn.recv()
                    if isinstance(msg, dict) and "started" in msg:
                        s.started, s.begun = time.monotonic(), True
                    else:
                        result = msg
            except (EOFError, OSError):
                eof = True
            if result is not None:
                result["attempt"] = int((s.task or {}).get("attempt", 1))
                out.append(result)
                s.task = None
            elif eof or s.proc.sentinel in ready or not s.proc.is_alive():
                self._died(s, out)
            elif self.timeout_s is not None and now - s.started >= self.timeout_s + (
                    0.0 if s.begun else STARTUP_S):
                out.append(_failed(s.task or {}, f"timeout after {self.timeout_s:g} s",
                                   f"pool worker {s.index} (pid {s.proc.pid})", now - s.started))
                self._kill(s)
                s.task = None
        self._dispatch()
        return out

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for s in self._slots:
            if s.conn is not None and s.proc is not None and s.proc.is_alive() and s.task is None:
                with contextlib.suppress(OSError):
                    s.conn.send(None)
        for s in self._slots:
            if s.proc is not None:
                s.proc.join(2 if s.task is None else 0)
            self._kill(s)
            s.task = None


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
