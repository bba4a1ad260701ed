"""A latency table over tuned kernels: each fused TIR workload timed alone, once per record.

Compiled from a :class:`~nasir.backends.tvm.tuning_db.TuningDatabase`, a network is the
sequence of its fused TIR workloads (MetaSchedule's tasks), each run with the database's best
schedule. :class:`KernelLUT` is a :class:`~nasir.backends.tvm.lut.LatencyLUT` whose entries
are those kernels instead of whole layers: a candidate's keys are its workloads, each
repeated as often as the network calls it (the task's weight), and a missing entry is the
workload compiled alone with the record the database holds for it (TVM's default schedule
where it holds none) and timed on random inputs of its argument shapes. The key carries a
digest of that record, so a workload tuned further is timed again rather than read stale.

Why kernels and not layers: a layer compiled alone is fused and scheduled differently from
the same layer inside a network, and with tuned schedules the difference is no longer a
constant; the kernels *are* what the network runs. On 30 MnasNet candidates at 64², the
kernel sum ranked the measured tuned network latency with Kendall τ 0.93 where each tuning
record's own ``run_secs`` gave 0.54 (``notes/issue-23-speed.md``).

>>> import tempfile, os
>>> from nasir.text import parse_graph
>>> from nasir.backends.tvm.tuning_db import TuningDatabase
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = conv2d(%x) {out_channels=4, kernel=3}
...   %2 = relu(%1)
...   return %2
... }''')
>>> d = tempfile.mkdtemp()
>>> lut = KernelLUT(os.path.join(d, "k.sqlite"), TuningDatabase("host", d),
...                 config=MeasureConfig(repeats=3, min_repeat_ms=1))
>>> keys = lut.ensure(g)
>>> len(keys) >= 1, all(k.endswith("@default") for k in keys), lut.layer_sum(g) > 0
(True, True, True)
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.machine_speed import at_speed
from nasir.backends.tvm.timing import MeasureConfig, run_timing
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.errors import BackendError
from nasir.graph import Graph

__all__ = ["KernelLUT", "MeasureConfig", "graph_kernels"]


def graph_kernels(g: Graph, db: TuningDatabase, *, batch: int = 1) -> list[tuple[str, int, Any]]:
    """``(workload key, calls, task)`` for each tunable fused workload of ``g`` lowered for
    ``db``'s target (:func:`~nasir.backends.tvm.tuning.graph_tasks`: the keys
    :func:`~nasir.backends.tvm.tuning.tune_module` tunes under)."""
    from nasir.backends.tvm.tuning import graph_tasks

    return [(k, int(t.weight), t) for k, t in graph_tasks(g, db, batch=batch).items()]


class KernelLUT(LatencyLUT):
    """Per-kernel latency table (SQLite, shared like :class:`LatencyLUT`) for the target of a
    tuning database: :meth:`ensure` returns a graph's kernel keys (one per call) and times
    the kernels not in the table; :meth:`layer_sum`, :meth:`predict`, :meth:`encode` and the
    numba predictors work on them unchanged. ``config.settle_s`` > 0 times each kernel
    once this machine runs at full speed (:mod:`.machine_speed`)."""

    def __init__(self, path: str, db: TuningDatabase, *, batch: int = 1,
                 config: MeasureConfig | None = None, scope: str = "default",
                 timing_rounds: int = 4) -> None:
        if db.spec.cross:
            raise BackendError(f"a kernel table times kernels on this machine; {db.spec} "
                               "code cannot run here", where=repr(db),
                               hint="use the per-layer table with an RPC device instead")
        super().__init__(path, db.spec, batch=batch, config=config, scope=scope)
        self.db = db
        #: kernels timed together in one full-speed window (compiled before it opens)
        self.timing_batch = 16
        #: separate windows each batch is timed in; a kernel keeps its fastest median (what
        #: slows a window — another tenant's cache or memory traffic, or a machine inside the
        #: gate's 25 % but not at its best — the gate's reference kernel does not always see).
        #: Two rounds left tiny kernels' entries 17 % apart (sd of log) between two builds of
        #: the same table, and a network sums dozens of them.
        self.timing_rounds = int(timing_rounds)
        self.extract_s = 0.0

    def kernel_key(self, key: str) -> str:
        """``workload@digest``: the digest of the record the database would compile ``key``
        with (``default`` when it holds none)."""
        recs = self.db.read(key)["records"] if self.db.has(key) else []
        if not recs:
            return f"{key}@default"
        tag = json.dumps(recs[0][0], sort_keys=True).encode()
        return f"{key}@{hashlib.sha1(tag).hexdigest()[:12]}"

    def ensure(self, g: Graph) -> list[str]:
        """Time every kernel of ``g`` not yet in the table; returns ``g``'s kernel keys, each
        as often as the network calls it."""
        t0 = time.perf_counter()
        kernels = graph_kernels(g, self.db, batch=self.batch)
        self.extract_s += time.perf_counter() - t0
        missing = {wl: task for wl, _, task in kernels if not self.db.has(wl)}
        if missing:
            from nasir.backends.tvm.tuning import TuningStats, note_missing

            note_missing(missing)
            wls = tuple(sorted({wl for wl, _, _ in kernels}))
            self._kernels_missing(g, TuningStats(len(wls), len(wls) - len(missing), keys=wls))
        keys: list[str] = []
        new: dict[str, tuple[str, Any]] = {}
        for wl, calls, task in kernels:
            k = self.kernel_key(wl)
            if k not in self._lat:
                new[k] = (wl, task)
            keys += [k] * calls
        built = [(k, *self._compile_kernel(k, wl, task)) for k, (wl, task) in new.items()]
        for at in range(0, len(built), self.timing_batch):
            self._time_kernels(built[at:at + self.timing_batch])
        return keys

    def _kernels_missing(self, graph: Graph, stats: Any) -> None:
        """Called by :meth:`ensure` when ``graph`` has workloads the database lacks
        (``stats``: a :class:`~nasir.backends.tvm.tuning.TuningStats` as a compile would give;
        :func:`~nasir.backends.tvm.tuning.missing_tasks` holds their tasks). A subclass
        offers them to a background tuner (``tuner.offer(graph, stats)``)."""

    def _compile_kernel(self, k: str, wl: str, task: Any) -> tuple[Any, list[Any], float]:
        """The kernel built alone with its record (TVM's default schedule for ``@default``)
        and random arguments of its shapes: ``(function, args, compile seconds)``."""
        import tvm
        from tvm.s_tir import meta_schedule as ms

        tgt = tvm.target.Target(self.db.target_json())
        t0 = time.perf_counter()
        mod = task.dispatched[0]
        if not k.endswith("@default"):
            sch = ms.tir_integration.compile_tir(self.db.load([wl], top=1), mod, tgt)
            if sch is not None:
                mod = sch.mod
        try:
            fn = tvm.compile(mod, target=tgt)
            fn = fn.jit() if hasattr(fn, "jit") else fn
        except Exception as e:
            raise BackendError(f"kernel {wl} ({task.task_name}) failed to compile: "
                               f"{str(e).strip().splitlines()[-1:]}") from None
        compile_s = time.perf_counter() - t0
        self.compile_s += compile_s
        dev = tvm.cpu()
        rng = np.random.default_rng(0)
        args = []
        for ai in ms.arg_info.ArgInfo.from_prim_func(mod["main"]):
            _, dtype, shape = ai.as_json()[:3]
            x = rng.standard_normal([int(s) for s in shape]).astype(dtype)
            args.append(tvm.runtime.tensor(x, dev))
        return fn, args, compile_s

    def _time_kernels(self, built: list[tuple[str, Any, list[Any], float]]) -> None:
        """Time built kernels one after the other, together inside one timing window and,
        with ``settle_s``, one full-speed window of the gate (timed again if the machine
        slowed meanwhile), in :attr:`timing_rounds` such windows; store each kernel's fastest
        median."""
        import tvm

        cfg, dev = self.config, tvm.cpu()

        def timing() -> list[tuple[list[float], float, float, int, bool]]:
            return [run_timing(fn, dev, args, cfg) for _, fn, args, _ in built]

        rounds = []
        for _ in range(max(1, self.timing_rounds)):
            with self._timing_window():
                rounds.append(at_speed(timing, cfg.settle_s, cfg.speed_tol)[0])
        timed = [min(per_kernel, key=lambda t: t[1]) for per_kernel in zip(*rounds)]
        for (k, _, _, compile_s), (_, med, cv, _, _) in zip(built, timed, strict=True):
            self.measured_now += 1
            self._store(k, med, cv, compile_s)
            self._lat[k] = med
