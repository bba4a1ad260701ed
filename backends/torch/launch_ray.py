"""Start the ranks of a data-parallel run on Ray: one actor per rank.

Rank 0's actor reports its node's address and a free port there, which is every rank's
rendezvous; each actor then joins the process group and runs ``fn(replica, *args)``
(:func:`~nasir.backends.torch.launch.run_rank`). Failures are reported as by
:func:`~nasir.backends.torch.launch.launch` (the rank that failed on its own, with its
traceback; a timeout); every actor is killed when the run ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from nasir.backends.torch.launch import (
    _check,
    _failed,
    _Failures,
    _last_line,
    _timeout,
    free_port,
    run_rank,
)
from nasir.errors import BackendError

__all__ = ["launch_ray"]


class _RankActor:
    """One Ray actor a rank (``launch_ray``)."""

    def address(self) -> tuple[str, int]:
        import ray

        host = ray.util.get_node_ip_address()
        return host, free_port(host)

    def run(self, fn: Callable[..., Any], rank: int, world_size: int, address: str,
            port: int, args: Sequence[Any], backend: str, device: str, timeout_s: float,
            threads: int) -> tuple[str, Any]:
        return run_rank(fn, rank, world_size, address, port, args, backend=backend,
                        device=device, timeout_s=timeout_s, threads=threads)


def launch_ray(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *,
               backend: str = "auto", device: str = "cpu", timeout_s: float = 600.0,
               threads: int = 1, gpus_per_rank: float | None = None) -> list[Any]:
    """:func:`launch` on Ray (``ray.init`` must have run): one actor per rank, each with
    ``threads`` CPUs (and one GPU with ``device="cuda"``); rank 0's node address and a
    free port there are the rendezvous. Actors are killed when the run ends or fails."""
    _check(world_size, timeout_s)
    import ray

    if not ray.is_initialized():
        raise BackendError("launch_ray needs a running Ray", where="launch_ray",
                           hint="ray.init() first (the runner does for executor ray)")
    gpus = gpus_per_rank if gpus_per_rank is not None else (1 if device == "cuda" else 0)
    cls = ray.remote(num_cpus=threads, num_gpus=gpus)(_RankActor)
    actors: list[Any] = [cls.remote() for _ in range(world_size)]  # type: ignore[union-attr]
    dev = "cuda" if device == "cuda" else device  # Ray sets CUDA_VISIBLE_DEVICES: GPU 0
    try:
        deadline = time.monotonic() + timeout_s
        host, port = ray.get(actors[0].address.remote(), timeout=timeout_s)
        refs = {a.run.remote(fn, k, world_size, host, port, tuple(args), backend, dev,
                             timeout_s, threads): k for k, a in enumerate(actors)}
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
                    status, out = ray.get(ref)
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
    finally:
        for a in actors:
            ray.kill(a)
