"""The local pool of worker processes (:mod:`~nasir.runtime.executors`): long-lived spawned
workers, one trial each at a time, each on its own GPU on a CUDA run; a dead worker's trial
is retried once on a fresh one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import wait as mp_wait
from typing import Any

from nasir.runtime.executor_base import Executor, _failed
from nasir.runtime.gpus import (
    assign_gpus,
    default_workers,
    gpu_count,
)
from nasir.runtime.worker import run_trial

__all__ = ["PoolExecutor"]

#: seconds a fresh pool worker may take to start (imports) before its trial's clock runs
STARTUP_S = 120.0


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
