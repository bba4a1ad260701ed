"""Start the ranks of a data-parallel run on Ray: one actor per rank.

Rank 0's actor reports its node's address and a free port there, which is every rank's
rendezvous; each actor then joins the process group and runs ``fn(replica, *args)`` for
each call (:class:`RayRankPool` keeps the actors for several calls). Failures are reported as by
:func:`~nasir.backends.torch.launch.launch` (the rank that failed on its own, with its
traceback; a timeout); every actor is killed when the pool closes or a call fails.
"""

from __future__ import annotations

import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from nasir.backends.torch.launch import (
    _call,
    _check,
    _failed,
    _Failures,
    _join,
    _last_line,
    _timeout,
    free_port,
)
from nasir.errors import BackendError

__all__ = ["RayRankPool", "launch_ray"]


class _RankActor:
    """One Ray actor a rank (:class:`RayRankPool`); calls and results as pickled bytes, so
    every rank unpickles its own copy of the arguments (as :class:`RankPool`'s do)."""

    def __init__(self) -> None:
        self.replica: Any = None

    def address(self) -> tuple[str, int]:
        import ray

        host = ray.util.get_node_ip_address()
        return host, free_port(host)

    def join(self, rank: int, world_size: int, address: str, port: int, backend: str,
             device: str, timeout_s: float, threads: int) -> bytes:
        try:
            self.replica = _join(rank, world_size, address, port, backend, device, timeout_s,
                                 threads)
            return pickle.dumps(("ok", None))
        except BaseException:
            return pickle.dumps(("error", traceback.format_exc()))

    def call(self, payload: bytes) -> bytes:
        fn, args = pickle.loads(payload)
        status, out = _call(fn, self.replica, args)
        try:
            return pickle.dumps((status, out))
        except Exception:  # an unpicklable result
            return pickle.dumps(("error", traceback.format_exc()))


class RayRankPool:
    """:class:`~nasir.backends.torch.launch.RankPool` on Ray (``ray.init`` must have run):
    one actor per rank, each with ``threads`` CPUs (and ``gpus_per_rank``, default one GPU
    with ``device="cuda"``); rank 0's node address and a free port there are the
    rendezvous. The actors keep their process group between calls; a failed call, or
    :meth:`close`, kills them."""

    def __init__(self, world_size: int, *, backend: str = "auto", device: str = "cpu",
                 timeout_s: float = 600.0, threads: int = 1,
                 gpus_per_rank: float | None = None) -> None:
        _check(world_size, timeout_s)
        import ray

        if not ray.is_initialized():
            raise BackendError("a Ray pool of ranks needs a running Ray", where="launch_ray",
                               hint="ray.init() first (the runner does for executor ray)")
        self.ray, self.world_size, self.timeout_s = ray, world_size, float(timeout_s)
        gpus = gpus_per_rank if gpus_per_rank is not None else (1 if device == "cuda" else 0)
        cls = ray.remote(num_cpus=threads, num_gpus=gpus)(_RankActor)
        self.actors: list[Any] = [cls.remote() for _ in range(world_size)]
        dev = "cuda" if device == "cuda" else device  # Ray sets CUDA_VISIBLE_DEVICES: GPU 0
        try:
            host, port = ray.get(self.actors[0].address.remote(), timeout=timeout_s)
            self._gather([a.join.remote(k, world_size, host, port, backend, dev, timeout_s,
                                        threads) for k, a in enumerate(self.actors)],
                         self.timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether the actors were killed."""
        return not self.actors

    def run(self, fn: Callable[..., Any], args: Sequence[Any] = (),
            timeout_s: float | None = None) -> list[Any]:
        """``fn(replica, *args)`` on every rank; the results in rank order."""
        if self.closed:
            raise BackendError("this pool of ranks was closed", where="RayRankPool.run",
                               hint="a failed call closes the pool: make a new one")
        payload = pickle.dumps((fn, tuple(args)))
        try:
            return self._gather([a.call.remote(payload) for a in self.actors],
                                timeout_s or self.timeout_s)
        except BaseException:
            self.close()
            raise

    def _gather(self, pending: list[Any], timeout_s: float) -> list[Any]:
        ray, world_size = self.ray, self.world_size
        refs = {ref: k for k, ref in enumerate(pending)}
        deadline = time.monotonic() + timeout_s
        results: dict[int, Any] = {}
        failed = _Failures(world_size)
        while refs:
            left = (failed.until if failed.errors else deadline) - time.monotonic()
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=max(0.0, left))
            if not ready:
                if failed.errors:
                    break
                raise _timeout("launch_ray", timeout_s, len(results), world_size)
            for ref in ready:
                k = refs.pop(ref)
                try:
                    status, out = pickle.loads(ray.get(ref))
                except ray.exceptions.RayError as e:
                    failed.add(k, _failed(k, world_size, f"its actor died "
                                          f"({type(e).__name__})", str(e)), None)
                    continue
                if status != "ok":
                    failed.add(k, _failed(k, world_size, _last_line(out), out), out)
                else:
                    results[k] = out
        if failed.errors:
            raise failed.first()
        return [results[k] for k in range(world_size)]

    def close(self) -> None:
        """Kill the actors."""
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []


def launch_ray(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *,
               backend: str = "auto", device: str = "cpu", timeout_s: float = 600.0,
               threads: int = 1, gpus_per_rank: float | None = None) -> list[Any]:
    """:func:`~nasir.backends.torch.launch.launch` on Ray: a :class:`RayRankPool` of one
    call."""
    pool = RayRankPool(world_size, backend=backend, device=device, timeout_s=timeout_s,
                       threads=threads, gpus_per_rank=gpus_per_rank)
    try:
        return pool.run(fn, args)
    finally:
        pool.close()
