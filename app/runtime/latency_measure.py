"""Measuring a whole network for a trial, with training kept off the measurement cores.

:func:`measure_network` is what both sides of ``latency.policy`` call: a ``measure`` worker
(:class:`~nasir.runtime.estimators.LatencyEstimator` with a tuning database) and the
measurement process of ``predict`` / ``auto``
(:func:`~nasir.runtime.latency_service.service_main`). :func:`quiet_window` moves every
thread of the training processes off the measurement cores while something is timed.
This module imports no other runtime module at load time, so both can import it.

>>> sorted(measurement_cores(1)) == [(os.cpu_count() or 1) - 1]
True
>>> with quiet_window([], {0}) as moved:
...     moved
0
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["measure_network", "measurement_cores", "quiet_window", "tuned_compile_options"]


def tuned_compile_options(target: Any) -> dict[str, Any]:
    """What :func:`~nasir.backends.tvm.compile.compile_graph` needs to build from the
    target's persistent tuning database (``db=``; workloads it lacks keep TVM's default
    schedule): the database in ``$NASIR_CACHE_DIR/tuning`` (a ``StoreError`` where that
    folder cannot be used)."""
    from nasir.backends.tvm.tuning_db import TuningDatabase

    return {"db": TuningDatabase(target)}


def _tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@contextlib.contextmanager
def quiet_window(pids: Sequence[int], cores: set[int]) -> Iterator[int]:
    """Move every thread of ``pids`` off ``cores`` for the ``with`` body (and back after).
    Yields how many threads were moved (0 where affinity cannot be set)."""
    if not hasattr(os, "sched_setaffinity"):
        yield 0
        return
    rest = set(range(os.cpu_count() or 1)) - cores
    saved: dict[int, set[int]] = {}
    if rest:
        for pid in pids:
            for tid in _tids(pid):
                try:
                    saved[tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, (saved[tid] - cores) or rest)
                except OSError:  # the thread ended or is not ours
                    saved.pop(tid, None)
    try:
        yield len(saved)
    finally:
        for tid, aff in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, aff)


def measurement_cores(count: int) -> set[int]:
    """The last ``count`` CPUs of the machine: where the measurement process runs."""
    n = os.cpu_count() or 1
    return set(range(max(0, n - count), n))


def measure_network(g: Any, target: Any, cfg: Any, cache: Any, pids: Sequence[int] = (),
                    cores: set[int] | None = None, build: Mapping[str, Any] | None = None,
                    tuner: Any = None) -> dict[str, Any]:
    """Compile ``g`` (outside the quiet window; ``build``: extra
    :func:`~nasir.backends.tvm.compile.compile_graph` options such as the tuning database),
    time it (inside the window), through the run's ``cache``. With a database, the result
    says how many workloads it covered (``latency_tuned_workloads`` /
    ``latency_untuned_workloads``), the missing ones are offered to ``tuner``
    (:class:`~nasir.runtime.background_tuning.BackgroundTuner`), and only a fully tuned
    network's latency is cached (a later compile may find more workloads tuned)."""
    from dataclasses import replace

    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.lut import _typed
    from nasir.backends.tvm.measure import graph_key, measure_compiled
    from nasir.runtime.background_tuning import tuning_metrics

    g = _typed(g)
    key, shape = graph_key(g), tuple(g.inputs[0].type.shape)
    tkey = target.key() + (":tuned" if build else "")
    hit = cache.get(key, tkey, shape, cfg.batch) if cache is not None else None
    if hit is not None:
        return {"ok": True, "median_ms": hit.median_ms, "cv": hit.cv, "compile_s": 0.0,
                "cached": True, **({"latency_untuned_workloads": 0} if build else {})}
    t0 = time.perf_counter()
    c = compile_graph(g, target, batch=cfg.batch, **dict(build or {}))
    tuned = tuning_metrics(c.tuning)
    if tuner is not None:
        tuner.offer(g, c.tuning)
    with quiet_window(pids, cores or set()) as moved:
        r = measure_compiled(c, cfg)
    if not r.ok:
        return {"ok": False, "reason": r.reason, "compile_s": c.compile_s, **tuned}
    if cache is not None and not tuned.get("latency_untuned_workloads"):
        cache.put(replace(r, graph_key=key, target=str(target), input_shape=shape), tkey)
    return {"ok": True, "median_ms": r.median_ms, "cv": r.cv, "compile_s": c.compile_s,
            "cached": False, "moved_threads": moved, "latency_s": time.perf_counter() - t0,
            **tuned}
