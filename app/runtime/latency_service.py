"""The measurement process of ``latency.policy`` predict / auto, and its quiet windows.

One process per run (:class:`~nasir.runtime.latency_policy.LatencyRunner` starts it) answers
requests one at a time: ``predict`` (a network's per-layer table latency; layers the table
lacks are compiled and timed once, :class:`PolicyLUT`), ``fill`` (the same, for a trial that
was answered with an estimate and goes on without it) and ``measure`` (the whole
network compiled and timed, :func:`measure_network`, through the run's latency cache).
With ``latency.tuned`` and ``latency.tune_trials`` > 0, the workloads a measured network
found missing from the tuning database are tuned while no request waits, one at a time
(:mod:`nasir.runtime.background_tuning`); every answer carries the tuning counts so far.

It is pinned to the last ``latency.cores`` CPUs. While it *times* something (compilation
runs outside this window), every thread of the training processes is moved off those CPUs
(:func:`quiet_window`) and moved back after, so a timed run never shares a core with
training. Limits: other programs on the machine are not moved; on a one-CPU machine there
is nowhere to move them; Ray workers are not moved (their pids are not known here); on a
2-core machine training runs on one core during each window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.backends.tvm.lut import LatencyLUT

__all__ = ["PolicyLUT", "measure_network", "open_table", "quiet_window", "service_main",
           "tuned_compile_options"]


def tuned_compile_options(target: Any) -> dict[str, Any]:
    """What :func:`~nasir.backends.tvm.compile.compile_graph` needs to build from the
    target's persistent tuning database (``db=``; workloads it lacks keep TVM's default
    schedule): the database in ``$NASIR_CACHE_DIR/tuning`` (a ``StoreError`` where that
    folder cannot be used)."""
    from nasir.backends.tvm.tuning_db import TuningDatabase

    return {"db": TuningDatabase(target)}


# -- the measurement process -------------------------------------------------------------------
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


def _measurement_cores(count: int) -> set[int]:
    n = os.cpu_count() or 1
    return set(range(max(0, n - count), n))


class PolicyLUT(LatencyLUT):
    """A per-layer table whose layers compile with ``build`` (e.g. the tuning database,
    :func:`tuned_compile_options`) and are timed inside the :func:`quiet_window` of
    ``pids`` / ``cores``."""

    build: Mapping[str, Any] = {}
    pids: Sequence[int] = ()
    cores: set[int] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stats: dict[str, list[tuple[int, float]]] = {}  # op → (MACs, ms) of its layers
        self._seen: set[str] = set()

    def lookup(self, g: Any) -> float | None:
        """``g``'s table latency (layer sum + constant) when every layer is in the table —
        rows other processes added since are read first — else ``None``; never measures."""
        from nasir.backends.tvm.lut import FREE_OPS, layer_key, layers

        nodes = layers(g)
        keys = [layer_key(n) for n in nodes if n.op.name not in FREE_OPS]
        missing = sorted({k for k in keys if k not in self._lat})
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self._db.execute(
                f"SELECT key, latency_ms FROM lut_layer WHERE target=? AND batch=? AND key IN "
                f"({marks})", (self._tkey, self.batch, *missing)).fetchall()
            self._lat.update(dict(rows))
        if any(k not in self._lat for k in keys):
            return None
        return float(sum(self._lat[k] for k in keys)) + self.constant_ms

    def estimate(self, g: Any) -> tuple[float | None, int]:
        """``(latency, missing)``: the table latency of ``g`` with each layer the table
        lacks estimated from its MACs (per op: least squares ``ms = a + b · MACs`` over the
        layers of that op seen here, else their median, else the median of every layer
        seen); ``(None, n)`` when nothing has been seen yet. Never measures."""
        from nasir.backends.tvm.lut import FREE_OPS, layer_key, layers

        nodes = [n for n in layers(g) if n.op.name not in FREE_OPS]
        base = self.lookup(g)
        for n in nodes:
            k = layer_key(n)
            if k in self._lat and k not in self._seen:
                self._seen.add(k)
                self._stats.setdefault(n.op.name, []).append((_macs(n), self._lat[k]))
        if base is not None:
            return base, 0
        missing = [n for n in nodes if layer_key(n) not in self._lat]
        every = [ms for pts in self._stats.values() for _, ms in pts]
        if not every:
            return None, len(missing)
        total = sum(self._lat[layer_key(n)] for n in nodes if layer_key(n) in self._lat)
        for n in missing:
            pts = self._stats.get(n.op.name) or []
            if len(pts) >= 3 and len({m for m, _ in pts}) > 1:
                b, a = np.polyfit([m for m, _ in pts], [ms for _, ms in pts], 1)
                total += max(float(a + b * _macs(n)), 0.0)
            else:
                total += float(np.median([ms for _, ms in pts] if pts else every))
        return total + self.constant_ms, len(missing)

    def _build_options(self) -> Mapping[str, Any]:
        return self.build

    def _timing_window(self) -> Any:
        return quiet_window(self.pids, self.cores)


def _macs(n: Any) -> int:
    return int(n.op.macs(tuple(i.type for i in n.inputs), n.type))


def open_table(exp: Any, space: Any) -> PolicyLUT:
    """The per-layer table of an experiment's target for ``space``
    (:func:`~nasir.runtime.latency_policy.table_path`)."""
    from nasir.backends.tvm import MeasureConfig, resolve_target
    from nasir.runtime.latency_policy import table_path

    t = exp.target
    target = resolve_target(t.spec or {"host": "host", "cuda": "cuda", "rpc": "aarch64"}[t.kind])
    cfg = MeasureConfig(repeats=t.repeats, warmup=2, min_repeat_ms=2.0)
    return PolicyLUT(table_path(exp), target, config=cfg, scope=space.name)


def service_main(conn: Any, exp: dict[str, Any], run_dir: str | None, parent: int) -> None:
    """The dedicated measurement process: table latency and whole-network measurements."""
    from nasir.runtime.executors import _die_with_parent

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.latency_policy import table_path

    e = Experiment.from_dict(exp)
    cores = _measurement_cores(e.latency.cores)
    os.environ["TVM_NUM_THREADS"] = str(len(cores))
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, cores)
    from nasir.backends.tvm import LatencyCache, MeasureConfig, resolve_target
    from nasir.runtime.worker import build_space

    t = e.target
    target = resolve_target(t.spec or {"host": "host", "cuda": "cuda", "rpc": "aarch64"}[t.kind])
    cfg = MeasureConfig(repeats=t.repeats, warmup=2, min_repeat_ms=2.0)
    pids: list[int] = []
    build = tuned_compile_options(target) if e.latency.tuned else {}

    space = build_space(exp, run_dir)
    lut = PolicyLUT(table_path(e), target, config=cfg, scope=space.name)
    lut.build, lut.pids, lut.cores = build, pids, cores
    cache: Any = None  # the run's latency cache, opened by the first measurement
    tuner = None
    if build:  # with tune_trials 0 it queues nothing and only reports zeros
        from nasir.runtime.background_tuning import BackgroundTuner

        tuner = BackgroundTuner(build["db"], e.latency.tune_trials, batch=cfg.batch,
                                window=lambda: quiet_window(pids, cores))
    while True:
        try:
            if tuner is not None and tuner.pending and not conn.poll(0):
                _tune_step(tuner)  # idle: one workload (or one network's extraction)
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, tid, assignment, pids[:] = msg
        t0 = time.perf_counter()
        out: dict[str, Any] = {"kind": kind, "trial": tid}
        try:
            g = space.instantiate(space.check(assignment))
            if kind in ("predict", "fill"):
                before = lut.measured_now
                out.update(ok=True, table_ms=lut.layer_sum(g) + lut.constant_ms,
                           new_layers=lut.measured_now - before)
            else:
                if cache is None and run_dir:
                    cache = LatencyCache(os.path.join(run_dir, "latency.sqlite"))
                out.update(measure_network(g, target, cfg, cache, pids, cores, build, tuner))
        except Exception as err:  # reported per request; the process goes on
            out.update(ok=False, reason=f"{type(err).__name__}: {str(err).splitlines()[0]}"
                       if str(err) else type(err).__name__)
        out["seconds"] = time.perf_counter() - t0
        out.update(tuner.summary() if tuner is not None else {})
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


def _tune_step(tuner: Any) -> None:
    try:
        tuner.step()
    except Exception as err:  # the database went bad: the run goes on untuned
        tuner.stop(err)


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
