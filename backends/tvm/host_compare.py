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
from typing import TYPE_CHECKING, Any

import numpy as np

from nasir.errors import BackendError
from nasir.graph import Graph

if TYPE_CHECKING:
    from nasir.backends.tvm.tuning_db import TuningDatabase

__all__ = ["HostLatencies", "host_latencies", "time_callable"]


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


def time_callable(fn: Callable[[], Any], *, repeats: int = 15, warmup: int = 3,
                  min_repeat_ms: float = 10.0) -> float:
    """Median over ``repeats`` of the per-call time (ms) of ``fn``, each repeat calling it
    often enough to last ``min_repeat_ms`` (the policy of TVM's ``time_evaluator``)."""
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
    return float(np.median(times))


def host_latencies(graph: Graph, *, db: TuningDatabase | None = None,
                   trials_per_workload: int = 0, threads: int | None = None, batch: int = 1,
                   seed: int = 0, repeats: int = 15, min_repeat_ms: float = 10.0,
                   paths: tuple[str, ...] = ("tvm", "eager", "onnxruntime")) -> HostLatencies:
    """Time ``graph`` on this machine through TVM (from ``db`` when given), PyTorch eager and
    ONNX Runtime, all with ``threads`` threads (default: the physical cores, what TVM's
    runtime uses). Raises :class:`~nasir.errors.BackendError` if their outputs differ."""
    import psutil
    import torch

    from nasir.backends.torch import lower as torch_lower
    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.measure import MeasureConfig, measure_compiled

    bad = [p for p in paths if p not in ("tvm", "eager", "onnxruntime")]
    if bad:
        raise BackendError(f"unknown latency path {bad[0]!r}",
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
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(n)
    times: dict[str, float] = {}
    outs: dict[str, np.ndarray] = {}
    tuning = None
    compile_s = 0.0
    try:
        with torch.inference_mode():
            outs["eager"] = net(xt).numpy()
            if "eager" in paths:
                times["eager"] = time_callable(lambda: net(xt), repeats=repeats,
                                               min_repeat_ms=min_repeat_ms)
        if "tvm" in paths:
            weights = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            c = compile_graph(g, "host", batch=batch, weights=weights, db=db,
                              trials_per_workload=trials_per_workload)
            compile_s = c.compile_s
            tuning = c.tuning.to_json() if c.tuning is not None else None
            outs["tvm"] = c.run([x])[0]
            r = measure_compiled(c, MeasureConfig(batch=batch, repeats=repeats, warmup=3,
                                                  min_repeat_ms=min_repeat_ms))
            times["tvm"] = float(r.median_ms or 0.0)
        if "onnxruntime" in paths:
            times["onnxruntime"], outs["onnxruntime"] = _ort(net, xt, n, repeats,
                                                             min_repeat_ms)
    finally:
        torch.set_num_threads(saved_threads)
    diff = max(float(np.abs(o - outs["eager"]).max()) for o in outs.values())
    scale = max(1.0, float(np.abs(outs["eager"]).max()))
    if diff > 1e-3 * scale:
        raise BackendError(f"the paths' outputs differ by {diff:.3g}",
                           where=f"graph @{graph.name}",
                           hint="a lowering disagrees with PyTorch; report the graph")
    return HostLatencies(times, n, batch, diff, tuning, compile_s)


def _ort(net: Any, xt: Any, threads: int, repeats: int, min_repeat_ms: float
         ) -> tuple[float, np.ndarray]:
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
    out = sess.run(None, feed)[0]
    return time_callable(lambda: sess.run(None, feed), repeats=repeats,
                         min_repeat_ms=min_repeat_ms), out
