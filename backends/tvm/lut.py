"""Per-layer latency lookup tables (FBNet / ProxylessNAS style), stored in SQLite.

A *layer* is one top-level node of an instantiated graph (an MBConv block, a stem conv,
the classifier…), keyed by its op signature and input types. Each distinct layer is
compiled and measured alone once; the predicted latency of a candidate is the sum over
its layers plus a constant measured by calibration on a few whole networks
(median of measured minus summed). Layers that cost nothing once compiled (identity,
dropout, flatten) count zero.

For the numba scorer the table is also exposed as arrays: ``latency_ms`` aligned with
``keys`` and per-candidate index rows (:meth:`LatencyLUT.encode`), and, where the space
is additive over its decisions (each decision's option adds the same layers whatever the
others are, as in NB201's shared cell), a dense ``decision × option`` table
(:meth:`LatencyLUT.dense`).

>>> import tempfile, os
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = relu_conv_bn(%x) {out_channels=4, kernel=3}
...   %2 = flatten(%1)
...   return %2
... }''')
>>> [layer_key(n) for n in layers(g)][1]
'flatten|f32[4,8,8]'
>>> lut = LatencyLUT(os.path.join(tempfile.mkdtemp(), "lut.db"), "host",
...                  config=MeasureConfig(repeats=3, min_repeat_ms=1))
>>> lut.predict(g) > 0
True
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.backends.tvm.compile import Compiled, compile_graph
from nasir.backends.tvm.measure import MeasureConfig, measure, measure_compiled
from nasir.backends.tvm.targets import TargetSpec, resolve_target
from nasir.errors import BackendError, StoreError
from nasir.graph import Graph, Node
from nasir.ops import InputOp

__all__ = ["FREE_OPS", "LatencyLUT", "build_lut", "layer_graph", "layer_key", "layers",
           "predict_dense", "predict_rows"]

#: ops that compile to nothing (views or the identity): zero latency, never measured
FREE_OPS = ("identity", "dropout", "flatten")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS lut_layer (
        target TEXT NOT NULL, batch INTEGER NOT NULL, key TEXT NOT NULL,
        latency_ms REAL NOT NULL, cv REAL, compile_s REAL, created REAL NOT NULL,
        PRIMARY KEY (target, batch, key))""",
    """CREATE TABLE IF NOT EXISTS lut_constant (
        target TEXT NOT NULL, batch INTEGER NOT NULL, scope TEXT NOT NULL,
        constant_ms REAL NOT NULL, samples TEXT NOT NULL, created REAL NOT NULL,
        PRIMARY KEY (target, batch, scope))""",
)


def _typed(g: Graph) -> Graph:
    if any(n.type is None for n in g.nodes()):
        from nasir.passes import verify

        g = g.copy()
        verify(g)
    return g


def layers(g: Graph) -> list[Node]:
    """The layers of a concrete graph: its top-level nodes other than inputs (typed)."""
    return [n for n in _typed(g).nodes() if n.op.name != "input"]


def layer_key(n: Node) -> str:
    """``op signature | input types`` of a typed node: what its latency depends on."""
    return f"{n.op.signature()}|{';'.join(str(i.type) for i in n.inputs)}"


def layer_graph(n: Node) -> Graph:
    """A graph computing node ``n`` alone on fresh inputs of its input types."""
    g = Graph(f"layer_{n.op.name}")
    ins = [g.add(InputOp(shape=tuple(i.shape), dtype=i.ttype.dtype), name=f"in{k}")
           for k, i in enumerate(n.inputs)]
    g.set_output(g.add(n.op, ins, name="layer"))
    return g


class LatencyLUT:
    """A per-layer latency table for one target and batch size, backed by SQLite.

    Missing layers are compiled and measured on first use and stored, so each distinct
    layer configuration is measured once across runs.
    """

    def __init__(self, path: str, target: str | Mapping[str, Any] | TargetSpec = "host", *,
                 batch: int = 1, config: MeasureConfig | None = None,
                 scope: str = "default") -> None:
        self.path = path
        self.target = resolve_target(target)
        self.batch = batch
        base = config or MeasureConfig(batch=batch)
        self.config = MeasureConfig(**{**base.__dict__, "batch": batch})
        self.scope = scope
        self._tkey = self.target.key()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open latency table {path}: {e}") from None
        self._lock = threading.Lock()
        self._lat: dict[str, float] = dict(self._db.execute(
            "SELECT key, latency_ms FROM lut_layer WHERE target=? AND batch=?",
            (self._tkey, batch)).fetchall())
        self._ids: dict[str, int] = {}
        self.measured_now = 0
        self.compile_s = 0.0

    # -- table ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._lat)

    def __contains__(self, key: object) -> bool:
        return key in self._lat

    def latency(self, key: str) -> float:
        """Stored latency of a layer key (ms); raises if it was never measured."""
        try:
            return self._lat[key]
        except KeyError:
            raise BackendError(f"layer {key!r} is not in the table",
                               hint="call lut.ensure(graph) to measure it") from None

    def _build_options(self) -> Mapping[str, Any]:
        """Extra :func:`compile_graph` options for a layer (a subclass may add a tuning
        database)."""
        return {}

    def _layer_compiled(self, graph: Graph, compiled: Compiled) -> None:
        """Called after each layer's compile with its one-layer graph (:func:`layer_graph`)
        and the result; ``compiled.tuning`` (with a tuning database in
        :meth:`_build_options`) names the workloads the database lacked. A subclass offers
        them to a background tuner here, as whole networks are
        (``tuner.offer(graph, compiled.tuning)``)."""

    def _timing_window(self) -> contextlib.AbstractContextManager[Any]:
        """Held while a layer is timed (a subclass may keep other work off its cores)."""
        return contextlib.nullcontext()

    def _measure_layer(self, n: Node) -> float:
        lg = layer_graph(n)
        c = compile_graph(lg, self.target, batch=self.batch, **dict(self._build_options()))
        self.compile_s += c.compile_s
        self._layer_compiled(lg, c)
        with self._timing_window():
            r = measure_compiled(c, self.config)
        if not r.ok or r.median_ms is None:
            raise BackendError(f"measuring layer {layer_key(n)} failed: {r.reason}")
        self.measured_now += 1
        self._store(layer_key(n), r.median_ms, r.cv, c.compile_s)
        return r.median_ms

    def _store(self, key: str, ms: float, cv: float | None, compile_s: float | None) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO lut_layer VALUES (?,?,?,?,?,?,?)",
                             (self._tkey, self.batch, key, ms, cv, compile_s, time.time()))
            self._db.commit()

    def ensure(self, g: Graph) -> list[str]:
        """Measure every layer of ``g`` not yet in the table; returns ``g``'s layer keys."""
        keys = []
        for n in layers(g):
            k = layer_key(n)
            keys.append(k)
            if k not in self._lat:
                if n.op.name in FREE_OPS:
                    self._store(k, 0.0, None, None)
                    self._lat[k] = 0.0
                else:
                    self._lat[k] = self._measure_layer(n)
        return keys

    # -- prediction ----------------------------------------------------------------
    @property
    def constant_ms(self) -> float:
        """The calibrated constant (0 before :meth:`calibrate`)."""
        row = self._db.execute(
            "SELECT constant_ms FROM lut_constant WHERE target=? AND batch=? AND scope=?",
            (self._tkey, self.batch, self.scope)).fetchone()
        return float(row[0]) if row else 0.0

    def layer_sum(self, g: Graph) -> float:
        """Sum of the layers' latencies (measuring missing ones)."""
        return float(sum(self._lat[k] for k in self.ensure(g)))

    def predict(self, g: Graph) -> float:
        """Predicted end-to-end latency of ``g`` in ms: layer sum + constant."""
        return self.layer_sum(g) + self.constant_ms

    def calibrate(self, graphs: Iterable[Graph]) -> float:
        """Measure ``graphs`` end to end; the constant becomes the median of
        (measured − layer sum). Returns it."""
        diffs = []
        for g in graphs:
            r = measure(g, self.target, self.config)
            if not r.ok or r.median_ms is None:
                raise BackendError(f"calibration network failed: {r.reason}")
            self.compile_s += r.compile_s or 0.0
            diffs.append(r.median_ms - self.layer_sum(g))
        if not diffs:
            raise BackendError("calibrate needs at least one network")
        const = float(np.median(diffs))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO lut_constant VALUES (?,?,?,?,?,?)",
                             (self._tkey, self.batch, self.scope, const, json.dumps(diffs),
                              time.time()))
            self._db.commit()
        return const

    # -- arrays for numba -----------------------------------------------------------
    def arrays(self) -> tuple[list[str], np.ndarray]:
        """``(keys, latency_ms)``: every stored layer and its latency (float64)."""
        keys = sorted(self._lat)
        self._ids = {k: i for i, k in enumerate(keys)}
        return keys, np.array([self._lat[k] for k in keys], dtype=np.float64)

    def encode(self, graphs: Sequence[Graph]) -> np.ndarray:
        """Rows of layer indices into :meth:`arrays` (int32, padded with -1), measuring
        missing layers first. Use with :func:`predict_rows`."""
        all_keys = [self.ensure(g) for g in graphs]
        self.arrays()
        width = max((len(k) for k in all_keys), default=0)
        out = np.full((len(graphs), width), -1, dtype=np.int32)
        for r, keys in enumerate(all_keys):
            out[r, :len(keys)] = [self._ids[k] for k in keys]
        return out

    def dense(self, space: Any, *, seed: int = 0, checks: int = 6) -> np.ndarray | None:
        """A ``decisions × max options`` table if the space is additive over decisions.

        Built one decision at a time from the first assignment of the space; checked on
        ``checks`` random assignments (their layer multisets must equal the base's plus
        each decision's difference). Returns ``None`` when the check fails, e.g. when a
        layer's shape depends on two decisions at once (MnasNet's filters). Prediction:
        :func:`predict_dense` with ``space.indices`` rows and :attr:`constant_ms` plus
        the base sum (entry ``[d, base option]`` is that sum split evenly, see code).
        """
        from nasir.passes.sampling import sample

        base_idx = [0] * len(space.decisions)
        base = space.from_indices(base_idx)
        base_layers = Counter(self.ensure(space.instantiate(base)))
        deltas: list[list[Counter]] = []
        for d, dec in enumerate(space.decisions):
            row = []
            for o in range(dec.size):
                idx = list(base_idx)
                idx[d] = o
                try:
                    got = Counter(self.ensure(space.instantiate(space.from_indices(idx))))
                except Exception:
                    return None
                delta = Counter(got)
                delta.subtract(base_layers)
                row.append(delta)
            deltas.append(row)
        rng = np.random.default_rng(seed)
        for a in sample(space, rng, checks):
            want = Counter(base_layers)
            for d, o in enumerate(space.indices(a)):
                want.update(deltas[d][o])
            got = Counter(self.ensure(space.instantiate(a)))
            if +want != got or any(v < 0 for v in want.values()):
                return None
        width = max(dec.size for dec in space.decisions)
        table = np.zeros((len(space.decisions), width), dtype=np.float64)
        base_sum = sum(self._lat[k] * c for k, c in base_layers.items())
        for d, row in enumerate(deltas):
            for o, delta in enumerate(row):
                table[d, o] = sum(self._lat[k] * c for k, c in delta.items())
            table[d, :] += base_sum / len(space.decisions)
        return table

    def close(self) -> None:
        """Close the database."""
        self._db.close()


_NUMBA: dict[str, Callable[..., Any]] = {}


def _jit(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name not in _NUMBA:
        try:
            import numba

            _NUMBA[name] = numba.njit(cache=False)(fn)
        except Exception:  # pragma: no cover - numba missing
            _NUMBA[name] = fn
    return _NUMBA[name]


def _rows(lat: np.ndarray, ids: np.ndarray, const: float) -> np.ndarray:
    out = np.empty(ids.shape[0])
    for r in range(ids.shape[0]):
        s = const
        for c in range(ids.shape[1]):
            if ids[r, c] >= 0:
                s += lat[ids[r, c]]
        out[r] = s
    return out


def _dense(table: np.ndarray, idx: np.ndarray, const: float) -> np.ndarray:
    out = np.empty(idx.shape[0])
    for r in range(idx.shape[0]):
        s = const
        for d in range(idx.shape[1]):
            s += table[d, idx[r, d]]
        out[r] = s
    return out


def predict_rows(latency_ms: np.ndarray, ids: np.ndarray, constant_ms: float) -> np.ndarray:
    """Numba: predicted latency per row of layer indices (see :meth:`LatencyLUT.encode`).

    >>> predict_rows(np.array([1.0, 2.0]), np.array([[0, 1], [1, -1]], np.int32), 0.5)
    array([3.5, 2.5])
    """
    return _jit("rows", _rows)(np.asarray(latency_ms, np.float64), np.asarray(ids, np.int32),
                               float(constant_ms))


def predict_dense(table: np.ndarray, indices: np.ndarray, constant_ms: float) -> np.ndarray:
    """Numba: predicted latency per row of option indices from a dense table."""
    return _jit("dense", _dense)(np.asarray(table, np.float64),
                                 np.asarray(indices, np.int64), float(constant_ms))


def build_lut(space: Any, path: str, target: str | Mapping[str, Any] | TargetSpec = "host", *,
              batch: int = 1, config: MeasureConfig | None = None,
              assignments: Iterable[Mapping[str, Any]] = (), samples: int = 0,
              calibration: int = 3, seed: int = 0) -> LatencyLUT:
    """Fill a table for ``space``: the layers of its references, of ``assignments`` and of
    ``samples`` random assignments; then calibrate the constant on ``calibration`` random
    networks (0 keeps the stored constant)."""
    from nasir.passes.sampling import sample

    lut = LatencyLUT(path, target, batch=batch, config=config, scope=space.name)
    rng = np.random.default_rng(seed)
    todo = [space.reference(r) for r in space.references] + list(assignments)
    if samples:
        todo += list(sample(space, rng, samples))
    for a in todo:
        lut.ensure(space.instantiate(a))
    if calibration:
        lut.calibrate(space.instantiate(a) for a in sample(space, rng, calibration))
    return lut
