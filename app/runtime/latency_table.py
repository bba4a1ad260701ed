"""The per-layer latency table of ``latency.policy`` predict / auto: where it lives, how a
run reads it, and how it is built once per space and target apart from any run.

FBNet's lookup table is measured once per target and read by every candidate; so is this
one. :func:`build_table` fills it before a search (``latency_table.build_table`` from a
script, or ``benchmarks/hw_search_speed.py --warm N``) with the layers of the space's
references, of ``N`` random candidates and of every assignment an earlier run *deferred*:
under ``auto`` a run never waits for a layer and compiles new ones only within its
measurement budget; the trials whose layers it did not get to are kept in the table's file
(:meth:`PolicyLUT.defer`) for the next build instead of being dropped.

>>> import tempfile
>>> lut = PolicyLUT(os.path.join(tempfile.mkdtemp(), "t.sqlite"), "host", scope="s")
>>> lut.defer([{"a": 1}, {"a": 1}, {"b": 2}]), lut.pending()
(2, [{'a': 1}, {'b': 2}])
>>> lut.done_pending([{"a": 1}]), lut.pending()
(None, [{'b': 2}])
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.backends.tvm.kernel_lut import KernelLUT
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.user_cache import cache_dir
from nasir.errors import NasirError

__all__ = ["PolicyKernelLUT", "PolicyLUT", "build_table", "check_latency_policy",
           "default_table_path", "measure_setup", "open_table", "table_path"]

_PENDING = """CREATE TABLE IF NOT EXISTS policy_pending (
    target TEXT NOT NULL, batch INTEGER NOT NULL, scope TEXT NOT NULL,
    assignment TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (target, batch, scope, assignment))"""


def default_table_path() -> str:
    """``$NASIR_CACHE_DIR/latency_lut.sqlite`` (default ``~/.cache/nasir``): one table per
    user, shared by every run and worker (rows are keyed by target and batch)."""
    return os.path.join(cache_dir(), "latency_lut.sqlite")


def table_path(exp: Any) -> str:
    """The per-layer table a run uses: ``latency.table``, else the user's shared one
    (tuned layers in a table of their own)."""
    if exp.latency.table:
        return str(exp.latency.table)
    path = default_table_path()
    return path.replace(".sqlite", "_tuned.sqlite") if exp.latency.tuned else path


def measure_setup(exp: Any) -> tuple[Any, Any]:
    """``(target, MeasureConfig)`` an experiment's latency is measured with (the table's
    layers and the measurement process's networks alike)."""
    from nasir.backends.tvm import MeasureConfig, resolve_target

    t = exp.target
    target = resolve_target(t.spec or {"host": "host", "cuda": "cuda", "rpc": "aarch64"}[t.kind])
    return target, MeasureConfig(repeats=t.repeats, warmup=2, min_repeat_ms=2.0,
                                 settle_s=exp.latency.settle_s)


def check_latency_policy(exp: Any) -> None:
    """What can be checked before a run starts: ``tuned`` needs the target's tuning
    database, and a table needs somewhere writable to live."""
    from nasir.runtime.experiment import ConfigError

    if exp.latency.tuned:
        from nasir.runtime.latency_measure import tuned_compile_options

        tuned_compile_options(measure_setup(exp)[0])
    other = [p for p in exp.latency_paths if p != "tvm"]
    if exp.needs_latency and other:
        target = measure_setup(exp)[0]
        if not target.host_cpu:
            raise ConfigError(f"latency.paths {other[0]!r} runs on this machine's CPU, but "
                              f"target.spec is {target}", where="latency.paths",
                              hint="use latency.paths ['tvm'] (or 'auto') for this target")
        import importlib.util

        if "onnxruntime" in other and importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError("latency.paths has 'onnxruntime', which is not installed",
                              where="latency.paths", hint="pip install onnxruntime, or use "
                              "latency.paths ['tvm']")
    if not exp.needs_latency or exp.latency_policy == "measure":
        return
    folder = os.path.dirname(os.path.abspath(table_path(exp)))
    hint = "give latency.table a writable path or set NASIR_CACHE_DIR"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the latency table's folder {folder}: "
                          f"{e.strerror or e}", where="latency.table", hint=hint) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the latency table's folder {folder} is not writable",
                          where="latency.table", hint=hint)


class PolicyLUT(LatencyLUT):
    """A per-layer table whose layers compile with ``build`` (e.g. the tuning database,
    :func:`~nasir.runtime.latency_measure.tuned_compile_options`) and are timed inside the
    :func:`~nasir.runtime.latency_measure.quiet_window` of ``pids`` / ``cores``; it reads
    without measuring (:meth:`lookup`, :meth:`estimate`) and keeps the assignments whose
    layers a run deferred (:meth:`defer`)."""

    build: Mapping[str, Any] = {}
    pids: Sequence[int] = ()
    cores: set[int] = set()
    #: the measurement process's :class:`~nasir.runtime.background_tuning.BackgroundTuner`
    #: (``None``: untuned); layer compiles offer it the workloads the database lacks
    tuner: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stats: dict[str, list[tuple[int, float]]] = {}  # op → (MACs, ms) of its layers
        self._seen: set[str] = set()
        self._db.execute(_PENDING)
        self._db.commit()

    def _layer_compiled(self, graph: Any, compiled: Any) -> None:
        if self.tuner is not None:
            self.tuner.offer(graph, compiled.tuning)

    def lookup(self, g: Any) -> float | None:
        """``g``'s table latency (layer sum + constant) when every layer is in the table —
        rows other processes added since are read first — else ``None``; never measures."""
        from nasir.backends.tvm.lut import FREE_OPS, layer_key, layers

        keys = [layer_key(n) for n in layers(g) if n.op.name not in FREE_OPS]
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

    # -- what a run left for the next build ------------------------------------------------
    def defer(self, assignments: Iterable[Mapping[str, Any]]) -> int:
        """Keep ``assignments`` whose layers are still to be measured (for
        :func:`build_table`); returns how many distinct ones are pending now."""
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO policy_pending VALUES (?,?,?,?,?)",
                [(self._tkey, self.batch, self.scope, json.dumps(dict(a), sort_keys=True), now)
                 for a in assignments])
            self._db.commit()
        return len(self.pending())

    def pending(self) -> list[dict[str, Any]]:
        """The deferred assignments of this table's target, batch and scope (oldest first)."""
        rows = self._db.execute(
            "SELECT assignment FROM policy_pending WHERE target=? AND batch=? AND scope=? "
            "ORDER BY created, assignment", (self._tkey, self.batch, self.scope)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def done_pending(self, assignments: Iterable[Mapping[str, Any]]) -> None:
        """Forget deferred ``assignments`` (their layers are in the table now)."""
        with self._lock:
            self._db.executemany(
                "DELETE FROM policy_pending WHERE target=? AND batch=? AND scope=? AND "
                "assignment=?", [(self._tkey, self.batch, self.scope,
                                  json.dumps(dict(a), sort_keys=True)) for a in assignments])
            self._db.commit()

    def _build_options(self) -> Mapping[str, Any]:
        return self.build

    def _timing_window(self) -> Any:
        from nasir.runtime.latency_measure import quiet_window

        return quiet_window(self.pids, self.cores)


class PolicyKernelLUT(PolicyLUT, KernelLUT):
    """The table of a tuned run on this machine's CPU: its entries are the kernels the
    network compiled from the tuning database runs (:class:`~nasir.backends.tvm.kernel_lut.
    KernelLUT`), timed in the quiet window; workloads the database lacks are offered to the
    run's background tuner. A network's kernels are known only once it is lowered, so this
    table is read in the measurement process alone: :meth:`lookup` and :meth:`estimate` say
    nothing (the trial asks the process, which answers while the trial trains)."""

    def _kernels_missing(self, graph: Any, stats: Any) -> None:
        if self.tuner is not None:
            self.tuner.offer(graph, stats)

    def lookup(self, g: Any) -> float | None:
        """``None``: read in the measurement process only (see the class)."""
        return None

    def estimate(self, g: Any) -> tuple[float | None, int]:
        """``(None, 0)``: read in the measurement process only (see the class)."""
        return None, 0


def _macs(n: Any) -> int:
    return int(n.op.macs(tuple(i.type for i in n.inputs), n.type))


def open_table(exp: Any, space: Any) -> PolicyLUT:
    """The latency table of an experiment's target for ``space`` (:func:`table_path`): per
    kernel of the tuning database (:class:`PolicyKernelLUT`) for a tuned run on this machine's
    CPU, else per layer (compiled from the database when tuned)."""
    target, cfg = measure_setup(exp)
    if exp.latency.tuned and target.host_cpu:
        from nasir.runtime.latency_measure import tuned_compile_options

        db = tuned_compile_options(target)["db"]
        return PolicyKernelLUT(table_path(exp), db, config=cfg, scope=space.name)
    return PolicyLUT(table_path(exp), target, config=cfg, scope=space.name)


def build_table(exp: Any, space: Any, *, candidates: int = 0, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fill the run's table (:func:`table_path`) for ``space`` apart from any run: the
    layers of the assignments earlier runs deferred, of the space's references and of
    ``candidates`` random ones (seeded). Returns what it did: ``layers`` before / after,
    ``measured`` (new layers), ``deferred_done``, ``deferred_invalid`` (assignments the space
    no longer accepts, dropped) and ``seconds``."""
    from nasir.passes.sampling import sample

    if exp.latency.tuned:
        from nasir.runtime.latency_measure import tuned_compile_options

        build: Mapping[str, Any] = tuned_compile_options(measure_setup(exp)[0])
    else:
        build = {}
    lut = open_table(exp, space)
    lut.build = build
    t0, before = time.perf_counter(), len(lut)
    out: dict[str, Any] = {"layers_before": before, "deferred_done": 0, "deferred_invalid": 0}
    try:
        for a in lut.pending():
            try:
                g = space.instantiate(space.check(a))
            except NasirError:
                out["deferred_invalid"] += 1
            else:
                lut.ensure(g)
                out["deferred_done"] += 1
            lut.done_pending([a])
        todo = [space.reference(r) for r in space.references]
        todo += list(sample(space, np.random.default_rng(seed), candidates)) if candidates \
            else []
        for k, a in enumerate(todo):
            lut.ensure(space.instantiate(a))
            if progress is not None and (k + 1) % 10 == 0:
                progress(f"{k + 1}/{len(todo)} candidates, {len(lut)} layers")
        out.update(layers=len(lut), measured=len(lut) - before,
                   seconds=round(time.perf_counter() - t0, 1))
    finally:
        lut.close()
    return out
