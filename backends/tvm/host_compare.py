"""The same network, same weights, on this machine: TVM next to PyTorch eager and ONNX Runtime.

:func:`host_latencies` builds the torch backend's module of a graph, compiles the TVM library
from the same weights (from a tuning database when one is given, i.e. the code ``nasir
export`` writes), exports the module to ONNX, checks all three give the same outputs and
times each with the same thread count, warm-up and repeat policy. ``best`` names the fastest
deployment path.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = conv2d(%x) {out_channels=4, kernel=3}
...   return %1
... }''')
>>> r = host_latencies(g, repeats=3, min_repeat_ms=1)
>>> sorted(r.times_ms), r.best in r.times_ms, r.max_abs_diff < 1e-3
(['eager', 'onnxruntime', 'tvm'], True, True)
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nasir.errors import BackendError
from nasir.graph import Graph

if TYPE_CHECKING:
    from nasir.backends.tvm.machine_speed import Settled
    from nasir.backends.tvm.timing import MeasureConfig
    from nasir.backends.tvm.tuning_db import TuningDatabase

__all__ = ["PATHS", "HostLatencies", "HostPaths", "PathTiming", "host_latencies",
           "prepare_host_paths", "time_callable", "time_samples"]


@dataclass(frozen=True)
class HostLatencies:
    """Median latency (ms per batch) of each path, and what the TVM build came from."""

    times_ms: dict[str, float]
    threads: int
    batch: int
    max_abs_diff: float
    tuning: dict[str, Any] | None = None
    compile_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> str:
        """The fastest path's name (``tvm``, ``eager`` or ``onnxruntime``)."""
        return min(self.times_ms, key=lambda k: self.times_ms[k])

    @property
    def best_ms(self) -> float:
        """The best deployment latency."""
        return self.times_ms[self.best]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (with ``best`` and ``best_ms``)."""
        return {"times_ms": dict(self.times_ms), "threads": self.threads, "batch": self.batch,
                "max_abs_diff": self.max_abs_diff, "tuning": self.tuning,
                "compile_s": self.compile_s, "best": self.best, "best_ms": self.best_ms}


def time_samples(fn: Callable[[], Any], *, repeats: int = 15, warmup: int = 3,
                 min_repeat_ms: float = 10.0) -> list[float]:
    """Per-call times (ms) of ``fn``, one per repeat, each repeat calling it often enough
    to last ``min_repeat_ms`` (the policy of TVM's ``time_evaluator``)."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(np.ceil(min_repeat_ms / 1e3 / once)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number * 1e3)
    return times


def time_callable(fn: Callable[[], Any], *, repeats: int = 15, warmup: int = 3,
                  min_repeat_ms: float = 10.0) -> float:
    """Median of :func:`time_samples`."""
    return float(np.median(time_samples(fn, repeats=repeats, warmup=warmup,
                                        min_repeat_ms=min_repeat_ms)))


PATHS = ("tvm", "eager", "onnxruntime")


class PathTiming(NamedTuple):
    """One path's timing: per-repeat times and their median (ms), the spread (std / mean),
    and the machine's speed around it (:class:`~nasir.backends.tvm.machine_speed.Settled`;
    ``None`` when the config does not wait for full speed)."""

    times: list[float]
    median_ms: float
    cv: float
    speed: Settled | None = None


@dataclass
class HostPaths:
    """A network made ready to run on this machine through several deployment paths, with
    the same weights and ``threads``: build it with :func:`prepare_host_paths` (compiles,
    exports, checks outputs), then :meth:`time` it (only runs the prepared code, so a
    caller can keep other work off the cores while it does)."""

    timers: dict[str, Callable[[MeasureConfig], tuple[list[float], float, float, int, bool]]]
    threads: int
    batch: int
    max_abs_diff: float
    tuning: Any = None  # the TVM build's TuningStats, when built from a database
    compile_s: float = 0.0

    def time(self, cfg: MeasureConfig | None = None) -> dict[str, PathTiming]:
        """Each path timed in turn, under ``cfg``'s repeat and noise policy (a path whose
        timings vary more than ``cv_threshold`` is timed again, the least noisy kept; TVM
        through its ``time_evaluator``, as :func:`~nasir.backends.tvm.measure.measure` times
        it; with ``cfg.settle_s``, only once the machine runs at full speed,
        :mod:`~nasir.backends.tvm.machine_speed`), torch's thread count set to ``threads``
        (TVM's pool and ONNX Runtime's were sized when prepared)."""
        import torch

        from nasir.backends.tvm.machine_speed import at_speed
        from nasir.backends.tvm.timing import MeasureConfig

        cfg = cfg or MeasureConfig(batch=self.batch)
        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        out = {}
        try:
            with torch.inference_mode():
                for name, timer in self.timers.items():
                    (times, med, cv, _, _), s = at_speed(lambda t=timer: t(cfg), cfg.settle_s,
                                                         cfg.speed_tol, self.threads)
                    out[name] = PathTiming(times, med, cv, s)
        finally:
            torch.set_num_threads(saved)
        return out


def _timer(fn: Callable[[], Any]
           ) -> Callable[[MeasureConfig], tuple[list[float], float, float, int, bool]]:
    """``fn`` timed by :func:`time_samples` under a config's repeat and noise policy."""
    from nasir.backends.tvm.timing import retry_timing

    return lambda cfg: retry_timing(lambda: time_samples(
        fn, repeats=cfg.repeats, warmup=cfg.warmup, min_repeat_ms=cfg.min_repeat_ms), cfg)


def prepare_host_paths(graph: Graph, paths: tuple[str, ...] = PATHS, *, target: Any = "host",
                       db: TuningDatabase | None = None, trials_per_workload: int = 0,
                       threads: int | None = None, batch: int = 1, seed: int = 0
                       ) -> HostPaths:
    """Build ``graph`` for each of ``paths`` (``tvm``: compiled for ``target``, a CPU target
    of this machine, from ``db`` when given — the library ``nasir export`` writes;
    ``eager``: the torch backend's module; ``onnxruntime``: that module exported to ONNX, as
    ``nasir export`` does) with the torch module's weights, run each once and check they
    agree with PyTorch (a :class:`~nasir.errors.BackendError` if not)."""
    import psutil
    import torch

    from nasir.backends.torch import lower as torch_lower

    bad = [p for p in paths if p not in PATHS]
    if bad or not paths:
        raise BackendError(f"unknown latency path {bad[0]!r}" if bad else "no latency path",
                           hint="use tvm, eager and/or onnxruntime")
    n = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    g = graph
    if any(nd.type is None for nd in g.nodes()):
        from nasir.passes import verify

        g = g.copy()
        verify(g)
    shape = tuple(int(s) for s in g.inputs[0].shape)
    net = torch_lower(g, seed=seed).eval()
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    xt = torch.from_numpy(x)
    out = HostPaths({}, n, batch, 0.0)
    outs: dict[str, np.ndarray] = {}
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with torch.inference_mode():
            outs["eager"] = net(xt).numpy()
        if "eager" in paths:
            out.timers["eager"] = _timer(lambda: net(xt))
        if "tvm" in paths:
            import tvm

            from nasir.backends.tvm.compile import compile_graph
            from nasir.backends.tvm.timing import run_timing

            weights = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            c = compile_graph(g, target, batch=batch, weights=weights, db=db,
                              trials_per_workload=trials_per_workload)
            if not c.target.host_cpu:
                raise BackendError(f"the tvm path runs {c.target} code, not this CPU's",
                                   hint="time other targets with nasir.backends.tvm.measure")
            out.compile_s, out.tuning = c.compile_s, c.tuning
            outs["tvm"] = c.run([x])[0]
            dev = tvm.cpu()
            vm = tvm.relax.VirtualMachine(c.executable, dev)
            xs = [tvm.runtime.tensor(x, dev)]
            out.timers["tvm"] = lambda cfg: run_timing(vm, dev, xs, cfg)
        if "onnxruntime" in paths:
            run, outs["onnxruntime"] = _ort(net, xt, n)
            out.timers["onnxruntime"] = _timer(run)
    finally:
        torch.set_num_threads(saved_threads)
    out.max_abs_diff = max(float(np.abs(o - outs["eager"]).max()) for o in outs.values())
    scale = max(1.0, float(np.abs(outs["eager"]).max()))
    if out.max_abs_diff > 1e-3 * scale:
        raise BackendError(f"the paths' outputs differ by {out.max_abs_diff:.3g}",
                           where=f"graph @{graph.name}",
                           hint="a lowering disagrees with PyTorch; report the graph")
    return out


def host_latencies(graph: Graph, *, db: TuningDatabase | None = None,
                   trials_per_workload: int = 0, threads: int | None = None, batch: int = 1,
                   seed: int = 0, repeats: int = 15, min_repeat_ms: float = 10.0,
                   paths: tuple[str, ...] = PATHS, settle_s: float = 0.0) -> HostLatencies:
    """Time ``graph`` on this machine through TVM (from ``db`` when given), PyTorch eager and
    ONNX Runtime, all with ``threads`` threads (default: the physical cores, what TVM's
    runtime uses); ``settle_s`` > 0: each path only once the machine runs at full speed,
    waiting up to that long (``extra["speed"]``: the speed each was timed at). Raises
    :class:`~nasir.errors.BackendError` if their outputs differ."""
    hp = prepare_host_paths(graph, paths, db=db, trials_per_workload=trials_per_workload,
                            threads=threads, batch=batch, seed=seed)
    from nasir.backends.tvm.timing import MeasureConfig

    samples = hp.time(MeasureConfig(batch=batch, repeats=repeats, warmup=3,
                                    min_repeat_ms=min_repeat_ms, settle_s=settle_s))
    times = {k: float(v.median_ms) for k, v in samples.items()}
    tuning = hp.tuning.to_json() if hp.tuning is not None else None
    speed = {k: v.speed.to_json() for k, v in samples.items() if v.speed is not None}
    return HostLatencies(times, hp.threads, batch, hp.max_abs_diff, tuning, hp.compile_s,
                         {"speed": speed} if speed else {})


def _ort(net: Any, xt: Any, threads: int) -> tuple[Callable[[], Any], np.ndarray]:
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory(prefix="nasir-onnx-") as d:
        path = os.path.join(d, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (xt,), path, input_names=["input"],
                              output_names=["logits"], dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"input": xt.numpy()}
    return (lambda: sess.run(None, feed)), sess.run(None, feed)[0]
