"""Measured latency: median over repeats after warm-up, CV reported, noisy runs retried.

A measurement never raises for a compile failure or a dropped RPC session: it returns a
:class:`LatencyResult` with ``status="failed"`` and the reason, so a search goes on.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = conv2d(%x) {out_channels=4, kernel=3}
...   return %1
... }''')
>>> r = measure(g, "host", MeasureConfig(repeats=5, min_repeat_ms=1))
>>> r.status, r.median_ms > 0, r.batch
('ok', True, 1)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nasir.backends.tvm.compile import Compiled, compile_graph, example_inputs
from nasir.backends.tvm.targets import TargetSpec, resolve_target
from nasir.backends.tvm.timing import LatencyResult, MeasureConfig, run_timing
from nasir.errors import BackendError, NasirError
from nasir.graph import Graph

if TYPE_CHECKING:
    from nasir.backends.tvm.cache import LatencyCache
    from nasir.backends.tvm.rpc import RemoteDevice
    from nasir.backends.tvm.tuning_db import TuningDatabase

__all__ = ["LatencyResult", "MeasureConfig", "graph_key", "measure", "measure_compiled",
           "run_timing"]


def graph_key(g: Graph) -> str:
    """Cache key of a graph: its canonical structural hash (``nasir.passes.hashing``)."""
    from nasir.passes.hashing import graph_hash

    return graph_hash(g)


def measure_compiled(c: Compiled, cfg: MeasureConfig | None = None, *, seed: int = 0
                     ) -> LatencyResult:
    """Measure an already compiled network on this machine (with ``cfg.settle_s`` on a CPU
    target: once the machine runs at full speed, :mod:`.machine_speed`; ``extra["speed"]``
    says the speed it was timed at)."""
    import tvm
    from tvm import relax

    cfg = cfg or MeasureConfig(batch=c.batch)
    base = LatencyResult("failed", str(c.target), c.input_shapes[0], c.batch,
                         compile_s=c.compile_s)
    if c.target.cross:
        return replace(base, reason=f"{c.target} code cannot run here; measure through RPC")
    dev = tvm.cpu() if c.target.device == "cpu" else tvm.cuda()
    if not dev.exist:
        return replace(base, reason=f"no {c.target.device} device on this machine")
    vm = relax.VirtualMachine(c.executable, dev)
    args = [tvm.runtime.tensor(x, dev) for x in example_inputs(c.input_shapes, c.batch, seed)]
    extra: dict[str, Any] = {}
    from nasir.backends.tvm.machine_speed import at_speed

    timed, speed = at_speed(lambda: run_timing(vm, dev, args, cfg),
                            cfg.settle_s if c.target.device == "cpu" else 0.0, cfg.speed_tol)
    if speed is not None:
        extra["speed"] = speed.to_json()
    times, med, cv, retries, flagged = timed
    return replace(base, status="ok", median_ms=med, cv=cv, times_ms=tuple(times),
                   retries=retries, flagged=flagged, extra=extra)


def _reason(e: BaseException) -> str:
    if isinstance(e, NasirError):
        return e.message
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".strip()


def measure(graph: Graph, target: str | Mapping[str, Any] | TargetSpec = "host",
            config: MeasureConfig | None = None, *, remote: RemoteDevice | None = None,
            cache: LatencyCache | None = None, weights: Mapping[str, Any] | None = None,
            db: TuningDatabase | None = None) -> LatencyResult:
    """Compile ``graph`` for ``target`` and measure it here or on ``remote`` (TVM RPC).

    With ``db`` (or ``config.trials_per_workload > 0``, which opens the target's default
    database) the network is compiled from the tuning database — its missing workloads tuned
    first with ``trials_per_workload`` candidates each, timed on ``remote`` when given —
    i.e. it is the code ``nasir export`` builds from the same database; ``extra["tuning"]``
    holds the :class:`~nasir.backends.tvm.tuning.TuningStats`. Such a result is cached under the
    database's fingerprint, and only when every workload came from the database.

    With ``cache``, a stored result for (canonical hash, target, input shape, batch) is
    returned without compiling; fresh successful results are stored. A compile failure or
    an RPC failure gives a result with ``status="failed"`` and ``reason``; a malformed
    target still raises :class:`~nasir.errors.TargetError` (it is the caller's mistake).
    """
    cfg = config or MeasureConfig()
    spec = resolve_target(target)
    g = graph
    if any(n.type is None for n in g.nodes()):
        from nasir.passes import verify

        g = g.copy()
        verify(g)
    key = graph_key(g)
    shape = tuple(g.inputs[0].shape)
    where = remote.label() if remote is not None else None
    if db is None and cfg.trials_per_workload:
        from nasir.backends.tvm.tuning_db import TuningDatabase

        db = TuningDatabase(spec)
    tkey = spec.key() + (f"@{where}" if where else "") + (f"#ms:{db.fingerprint}" if db
                                                          else "")
    if cache is not None:
        hit = cache.get(key, tkey, shape, cfg.batch)
        if hit is not None:
            return hit
    base = LatencyResult("failed", str(spec), shape, cfg.batch, remote=where, graph_key=key)
    t0 = time.perf_counter()
    try:
        c = compile_graph(g, spec, batch=cfg.batch, weights=weights,
                          tune_trials=cfg.tune_trials, db=db,
                          trials_per_workload=cfg.trials_per_workload, remote=remote)
    except NasirError as e:
        if not isinstance(e, BackendError):
            raise
        return replace(base, reason=f"compile failed: {_reason(e)}",
                       compile_s=time.perf_counter() - t0)
    if remote is not None:
        from nasir.backends.tvm.rpc import measure_remote

        res = measure_remote(c, remote, cfg)
    else:
        try:
            res = measure_compiled(c, cfg)
        except Exception as e:
            res = replace(base, reason=f"run failed: {_reason(e)}", compile_s=c.compile_s)
    res = replace(res, graph_key=key, target=str(spec), remote=where, input_shape=shape)
    complete = True
    if c.tuning is not None:
        res = replace(res, extra={**res.extra, "tuning": c.tuning.to_json()})
        complete = c.tuning.hits + c.tuning.tuned + c.tuning.waited == c.tuning.workloads
    if cache is not None and res.ok and complete:
        cache.put(res, tkey)
    return res
