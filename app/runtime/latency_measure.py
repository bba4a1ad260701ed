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

__all__ = ["DEPLOY_PATHS", "PATH_METRICS", "deploy_paths", "measure_network",
           "measurement_cores", "quiet_window", "tuned_compile_options"]

DEPLOY_PATHS = ("tvm", "onnxruntime", "eager")  # what latency.paths may list, in its order
# what a measurement adds: the fastest path and each path's latency, the machine's speed
PATH_METRICS = ("latency_path", "latency_paths_ms", "latency_speed")


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
                    tuner: Any = None, paths: Sequence[str] = ("tvm",)) -> dict[str, Any]:
    """Compile ``g`` (outside the quiet window; ``build``: extra
    :func:`~nasir.backends.tvm.compile.compile_graph` options such as the tuning database),
    time it (inside the window), through the run's ``cache``. With a database, the result
    says how many workloads it covered (``latency_tuned_workloads`` /
    ``latency_untuned_workloads``), the missing ones are offered to ``tuner``
    (:class:`~nasir.runtime.background_tuning.BackgroundTuner`), and only a fully tuned
    network's latency is cached (a later compile may find more workloads tuned).

    ``paths`` other than ``("tvm",)`` (see :func:`deploy_paths`; this machine's CPU only):
    the network is also made ready as ``nasir export`` writes it for those runtimes (same
    weights, outputs checked against PyTorch) and each path is timed in the window with
    ``len(cores)`` threads; the latency is the fastest path's (``latency_path`` names it,
    ``latency_paths_ms`` has them all)."""
    from dataclasses import replace

    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.lut import _typed
    from nasir.backends.tvm.measure import graph_key, measure_compiled
    from nasir.runtime.background_tuning import tuning_metrics

    g = _typed(g)
    paths = tuple(paths)
    key, shape = graph_key(g), tuple(g.inputs[0].type.shape)
    tkey = (target.key() + (":tuned" if build else "")
            + ("" if paths == ("tvm",) else ":" + "+".join(sorted(paths))))
    hit = cache.get(key, tkey, shape, cfg.batch) if cache is not None else None
    if hit is not None:
        return {"ok": True, "median_ms": hit.median_ms, "cv": hit.cv, "compile_s": 0.0,
                "cached": True, **({"latency_untuned_workloads": 0} if build else {}),
                **{k: v for k, v in hit.extra.items() if k in PATH_METRICS}}
    t0 = time.perf_counter()
    if paths == ("tvm",):
        c = compile_graph(g, target, batch=cfg.batch, **dict(build or {}))
        tuning, compile_s = c.tuning, c.compile_s
    else:
        from nasir.backends.tvm.host_compare import prepare_host_paths

        hp = prepare_host_paths(g, paths, target=target, batch=cfg.batch,
                                threads=len(cores) if cores else None, **dict(build or {}))
        tuning, compile_s = hp.tuning, hp.compile_s
    tuned = tuning_metrics(tuning)
    if tuner is not None:
        tuner.offer(g, tuning)
    extra: dict[str, Any] = {}
    with quiet_window(pids, cores or set()) as moved:
        if paths == ("tvm",):
            r = measure_compiled(c, cfg)
            if "speed" in r.extra:
                extra = {"latency_speed": r.extra["speed"]["speed"]}
        else:
            timed = hp.time(cfg)
            best = min(timed, key=lambda k: timed[k].median_ms)
            extra = {"latency_path": best,
                     "latency_paths_ms": {k: round(v.median_ms, 6) for k, v in timed.items()}}
            if timed[best].speed is not None:
                extra["latency_speed"] = round(min(v.speed.speed for v in timed.values()
                                                   if v.speed is not None), 4)
            r = _as_result(timed[best], target, shape, cfg.batch, compile_s)
    if not r.ok:
        return {"ok": False, "reason": r.reason, "compile_s": compile_s, **tuned}
    if cache is not None and not tuned.get("latency_untuned_workloads"):
        cache.put(replace(r, graph_key=key, target=str(target), input_shape=shape,
                          extra={**r.extra, **extra}), tkey)
    return {"ok": True, "median_ms": r.median_ms, "cv": r.cv, "compile_s": compile_s,
            "cached": False, "moved_threads": moved, "latency_s": time.perf_counter() - t0,
            **tuned, **extra}


def _as_result(timed: Any, target: Any, shape: tuple[int, ...], batch: int,
               compile_s: float) -> Any:
    from nasir.backends.tvm.timing import LatencyResult

    times, med, cv = timed.times, timed.median_ms, timed.cv
    return LatencyResult("ok", str(target), shape, batch, median_ms=med, cv=cv,
                         times_ms=tuple(times), compile_s=compile_s)


def deploy_paths(paths: Any, target_kind: str) -> tuple[str, ...]:
    """The deployment paths a run's latency is the fastest of (``latency.paths``): ``auto``
    is TVM and ONNX Runtime on a ``host`` target (both are what ``nasir export`` writes
    for this CPU) and TVM alone elsewhere; a list is taken as given, in a fixed order.

    >>> deploy_paths("auto", "host"), deploy_paths("auto", "rpc")
    (('tvm', 'onnxruntime'), ('tvm',))
    >>> deploy_paths(["onnxruntime", "tvm"], "host")
    ('tvm', 'onnxruntime')
    """
    if paths == "auto":
        return ("tvm", "onnxruntime") if target_kind == "host" else ("tvm",)
    return tuple(p for p in DEPLOY_PATHS if p in paths)
