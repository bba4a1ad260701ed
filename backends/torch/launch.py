"""Start the ranks of a data-parallel run as local processes (Ray: :mod:`.launch_ray`).

:func:`launch` spawns ``world_size`` local processes (a :class:`RankPool` keeps them for
several calls). Each rank joins a process group (gloo on CPU, NCCL on CUDA; rendezvous over TCP),
calls ``fn(replica, *args)`` with its :class:`~nasir.backends.torch.distributed.Replica`,
and the launcher returns the ranks' results in rank order.

A rank that raises, or dies (a signal, ``os._exit``), stops the run: the other ranks are
terminated (they would wait in a collective until the group timeout) and the launcher
raises :class:`~nasir.errors.NasirError` naming the rank with the tail of its traceback.
``timeout_s`` bounds the whole run; when it passes every rank is terminated and the error
says so. No process is left behind.

``fn`` and ``args`` travel by pickle to fresh interpreters (``spawn``): ``fn`` must be
importable by name (defined at a module's top level), and each rank builds its own model
from ``args`` (same seed on every rank).

>>> launch(str, 0)
Traceback (most recent call last):
...
nasir.errors.BackendError: a data-parallel run needs world_size >= 1, got 0
  where: launch
  fix:   one process per rank: world_size=2 for two
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

from nasir.backends.torch.distributed import Replica
from nasir.errors import BackendError, NasirError

__all__ = ["GRACE_S", "RankPool", "free_port", "launch", "run_rank"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the rendezvous of a new process group)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    return "nccl" if device.startswith("cuda") else "gloo"


def _rank_device(device: str, rank: int) -> torch.device:
    if device == "cuda":  # one GPU per rank: the rank's among those visible
        n = torch.cuda.device_count()
        dev = torch.device("cuda", rank % max(1, n))
        torch.cuda.set_device(dev)
        return dev
    return torch.device(device)


def _join(rank: int, world_size: int, address: str, port: int, backend: str, device: str,
          timeout_s: float, threads: int) -> Replica:
    torch.set_num_threads(max(1, int(threads)))
    dist.init_process_group(_backend(backend, device), init_method=f"tcp://{address}:{port}",
                            rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return Replica(rank, world_size, _rank_device(device, rank))


def _call(fn: Callable[..., Any], replica: Replica, args: Sequence[Any]) -> tuple[str, Any]:
    try:
        return "ok", fn(replica, *args)
    except BaseException:
        return "error", traceback.format_exc()


def run_rank(fn: Callable[..., Any], rank: int, world_size: int, address: str, port: int,
             args: Sequence[Any] = (), *, backend: str = "auto", device: str = "cpu",
             timeout_s: float = 600.0, threads: int = 1) -> tuple[str, Any]:
    """Join the group as ``rank``, run ``fn(replica, *args)``, leave the group.

    Returns ``("ok", result)`` or ``("error", traceback text)`` — never raises, so a
    launcher always learns why a rank stopped.
    """
    try:
        replica = _join(rank, world_size, address, port, backend, device, timeout_s, threads)
    except BaseException:
        return "error", traceback.format_exc()
    try:
        return _call(fn, replica, args)
    finally:
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """Linux: SIGKILL this rank when the launching process dies (``kill -9`` of the
    runner), instead of leaving it to wait in a collective until the group timeout."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no libc by that name: the group timeout still holds
        pass


def _pool_child(commands: Connection, results: Connection, rank: int, world_size: int,
                port: int, backend: str, device: str, timeout_s: float, threads: int) -> None:
    """A rank of a :class:`RankPool`: join the group once, then run each command sent
    (pickled ``(fn, args)``; empty bytes: leave) and send back its pickled result."""
    _die_with_parent()
    try:
        replica: Replica | None = _join(rank, world_size, "127.0.0.1", port, backend, device,
                                        timeout_s, threads)
        failed = ""
    except BaseException:
        replica, failed = None, traceback.format_exc()
    try:
        while data := commands.recv_bytes():
            if replica is None:
                status, out = "error", failed
            else:
                fn, args = pickle.loads(data)
                status, out = _call(fn, replica, args)
            # plain pickle both ways: multiprocessing's passes tensors as shared memory,
            # which the ranks would update in place together (an optimizer adopts loaded
            # tensors), and which goes away with the process that made it
            try:
                reply = pickle.dumps((status, out))
            except Exception:  # an unpicklable result
                reply = pickle.dumps(("error", traceback.format_exc()))
            results.send_bytes(reply)
    except EOFError:  # the pool went away
        pass
    finally:
        if replica is not None:
            dist.destroy_process_group()


def _failed(rank: int, world_size: int, why: str, tb: str = "") -> NasirError:
    tail = "\n".join(tb.strip().splitlines()[-12:])
    hint = ("the traceback below is the rank's; " if tail else
            "killed by a signal or os._exit (out of memory?); ") + "the other ranks were stopped"
    return BackendError(f"rank {rank} of {world_size} failed: {why}",
                        where=f"data-parallel rank {rank}", hint=hint, context=tail or None)


def _check(world_size: int, timeout_s: float) -> None:
    if world_size < 1:
        raise BackendError(f"a data-parallel run needs world_size >= 1, got {world_size}",
                           where="launch", hint="one process per rank: world_size=2 for two")
    if not timeout_s > 0:
        raise BackendError(f"timeout_s must be > 0, got {timeout_s}", where="launch")


class RankPool:
    """``world_size`` local rank processes in one process group, kept for several calls
    (a data-parallel job's epochs: no start-up or rebuild per epoch). :meth:`run` runs
    ``fn(replica, *args)`` on every rank; a failed call closes the pool (the group cannot
    be trusted after a rank failed). Arguments as for :func:`launch`; use it as a context
    manager or call :meth:`close`.
    """

    def __init__(self, world_size: int, *, backend: str = "auto", device: str = "cpu",
                 timeout_s: float = 600.0, threads: int | None = None) -> None:
        _check(world_size, timeout_s)
        self.world_size, self.timeout_s = world_size, float(timeout_s)
        threads = threads or max(1, (os.cpu_count() or 1) // world_size)
        ctx = mp.get_context("spawn")
        port = free_port()
        self.procs: list[Any] = []
        self.commands: list[Connection] = []
        self.results: list[Connection] = []
        try:
            for rank in range(world_size):
                cmd_recv, cmd_send = ctx.Pipe(duplex=False)
                res_recv, res_send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_pool_child, name=f"nasir-rank-{rank}", daemon=True,
                                args=(cmd_recv, res_send, rank, world_size, port, backend,
                                      device, timeout_s, threads))
                p.start()
                cmd_recv.close()
                res_send.close()
                self.procs.append(p)
                self.commands.append(cmd_send)
                self.results.append(res_recv)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether the ranks were stopped."""
        return not self.procs

    def run(self, fn: Callable[..., Any], args: Sequence[Any] = (),
            timeout_s: float | None = None) -> list[Any]:
        """``fn(replica, *args)`` on every rank; the results in rank order."""
        if self.closed:
            raise BackendError("this pool of ranks was closed", where="RankPool.run",
                               hint="a failed call closes the pool: make a new one")
        payload = pickle.dumps((fn, tuple(args)))
        try:
            for c in self.commands:
                c.send_bytes(payload)
            return _collect(self.procs, self.results, self.world_size,
                            timeout_s or self.timeout_s)
        except BaseException:
            self.close(wait_s=0.0)
            raise

    def close(self, wait_s: float = 5.0) -> None:
        """Stop every rank: asked to leave, given ``wait_s`` seconds, then terminated."""
        for c in self.commands:
            with contextlib.suppress(OSError):
                c.send_bytes(b"")
        deadline = time.monotonic() + wait_s
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        _stop(self.procs)
        for c in [*self.commands, *self.results]:
            c.close()
        self.procs, self.commands, self.results = [], [], []

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def launch(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *,
           backend: str = "auto", device: str = "cpu", timeout_s: float = 600.0,
           threads: int | None = None) -> list[Any]:
    """Run ``fn(replica, *args)`` in ``world_size`` local processes; their results.

    Args:
        fn: a top-level function (it is pickled by name into spawned interpreters).
        world_size: processes (ranks).
        args: passed to ``fn`` after the replica (picklable).
        backend: ``auto`` (NCCL for ``cuda``, else gloo), ``gloo`` or ``nccl``.
        device: ``cpu`` or ``cuda`` (rank ``r`` takes visible GPU ``r``).
        timeout_s: the whole run's limit (and the process group's collective timeout).
        threads: torch threads a rank (default: the CPU cores shared out, at least 1).
    """
    with RankPool(world_size, backend=backend, device=device, timeout_s=timeout_s,
                  threads=threads) as pool:
        return pool.run(fn, args)


class _Failures:
    """Failed ranks of a run. The first to report is often a victim (its collective lost the
    peer that raised), so the launcher waits :data:`GRACE_S` for the others and reports the
    one that failed on its own: a rank that died, else one whose traceback does not end in
    a collective."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.errors: dict[int, tuple[int, NasirError]] = {}
        self.until = 0.0

    def add(self, k: int, error: NasirError, tb: str | None) -> None:
        victim = tb is not None and "distributed_c10d" in tb
        self.errors[k] = (1 if victim else 0, error)
        if len(self.errors) == 1:
            self.until = time.monotonic() + GRACE_S

    def first(self) -> NasirError:
        return min(self.errors.items(), key=lambda kv: (kv[1][0], kv[0]))[1][1]


#: seconds a launcher waits for the other ranks' reports after one failed
GRACE_S = 3.0


def _timeout(where: str, timeout_s: float, finished: int, world_size: int) -> NasirError:
    return BackendError(f"data-parallel run timed out after {timeout_s:g} s "
                        f"({finished} of {world_size} ranks finished)", where=where,
                        hint="raise timeout_s, or look for a rank stuck outside the "
                             "collectives the others wait in")


def _collect(procs: list[Any], conns: list[Connection], world_size: int,
             timeout_s: float) -> list[Any]:
    results: dict[int, Any] = {}
    failed = _Failures(world_size)
    deadline = time.monotonic() + timeout_s
    waiting = {id(c): k for k, c in enumerate(conns)}
    sentinels = {p.sentinel: k for k, p in enumerate(procs)}
    while len(results) + len(failed.errors) < world_size:
        left = (failed.until if failed.errors else deadline) - time.monotonic()
        if left <= 0:
            if failed.errors:
                break
            raise _timeout("launch", timeout_s, len(results), world_size)
        live = [c for c in conns if id(c) in waiting]
        done = set(results) | set(failed.errors)
        ready = wait([*live, *[s for s, k in sentinels.items() if k not in done]], left)
        for r in ready:
            if isinstance(r, Connection):
                k = waiting.pop(id(r))
                try:
                    status, out = pickle.loads(r.recv_bytes())
                except EOFError:  # the pipe closed without a result: the process died
                    failed.add(k, _died(procs, k, world_size), None)
                    continue
                if status != "ok":
                    failed.add(k, _failed(k, world_size, _last_line(out), out), out)
                else:
                    results[k] = out
            elif (k := sentinels[r]) not in results and k not in failed.errors \
                    and not conns[k].poll():
                failed.add(k, _died(procs, k, world_size), None)
    if failed.errors:
        raise failed.first()
    return [results[k] for k in range(world_size)]


def _died(procs: list[Any], k: int, world_size: int) -> NasirError:
    procs[k].join(5)
    return _failed(k, world_size, f"the process died (exit code {procs[k].exitcode}) "
                   "without reporting")


def _last_line(tb: Any) -> str:
    lines = str(tb).strip().splitlines()
    return lines[-1] if lines else ""


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
