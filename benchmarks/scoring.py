"""Scoring throughput: 1,000,000 MnasNet candidates → predicted accuracy + latency + MACs.

Three implementations of the same scorer, timed in the same run: the fused numba kernel
(:meth:`Scorer.score`), vectorised numpy (:meth:`Scorer.score_numpy`) and a per-candidate
Python loop (timed on a subsample and extrapolated). Outputs are checked equal (float32
sums to 1e-3, MACs exactly).

Rows: the sampler gives int64 option indices; the candidates are stored once (outside the
timings) in the scorer's :meth:`~Scorer.index_dtype`, the narrowest integer type that holds
every index (int8 for MnasNet, whose decisions have at most 4 options), and **every
implementation reads the same stored rows**. The same comparison on the sampler's int64
rows is reported too (``*_int64`` keys).

The numpy baseline is the best numpy found, measured here on those rows with BLAS limited
to one thread: every first-layer method (``gather``, ``take``, ``einsum``, ``reduceat``
over the same grouped tables the kernel reads, and a dense ``onehot`` matrix times ``w1``)
at chunks of 512, 1024 and 4096 rows is timed on ``--probe`` candidates (best of two
rounds); the three fastest are then timed on all rows with the repeats, and the fastest of
those is the baseline (``numpy_method``). The old baseline (dense one-hot per 65,536 rows)
is timed too.

Two comparisons:

* **single thread** (``numba_1t_vs_numpy``): the kernel on one thread against the numpy
  baseline with one BLAS thread, in candidates per CPU second of this process
  (``time.process_time``) — the like-for-like figure on a shared machine;
* **default configuration** (``numba_vs_numpy``): ``Scorer.score`` as it runs by default,
  on numba's threads (``numba_threads``, the cores unless ``NUMBA_NUM_THREADS`` says
  otherwise), in candidates per wall second, against the fastest of three numpy
  configurations (``numpy_wall_config``): numpy as it runs by default (``numpy``) — its
  fancy indexing and elementwise adds run on one thread, only its BLAS products
  (addresses, second layer) use OpenBLAS's threads (``numpy_threads``); the same with BLAS
  on one thread (``numpy_1t``); and the baseline on ``numba_threads`` Python threads over
  contiguous parts of the rows, BLAS one thread each (``numpy_threaded``; numpy releases the
  GIL in those loops). Each is also reported on its own (``numba_vs_numpy_as_it_runs``,
  ``numba_vs_numpy_threaded``). Wall time on a shared machine depends on its load
  (``load_avg``); the single-thread figure does much less.

Every timing is repeated ``--repeats`` times, interleaved, and the best run counts (load
from other processes only ever slows a run down). The BLAS library and kernel in use are
printed (threadpoolctl): where the environment sets ``OPENBLAS_CORETYPE`` (older OpenBLAS
builds need it; it slows a current one), run with
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` to time numpy on its own kernel.

The ensemble (5 MLPs) and ridge are fitted on 256 random candidates against a stand-in
target (log MACs plus noise): MnasNet has no accuracy table here, and throughput does not
depend on what the models learned. Latency comes from a measured TVM LUT with ``--lut``
(every layer of the space must be in it), else from a roofline stand-in LUT with the same
per-block shape (:func:`nasir.strategies.surrogates.proxy_latency_ms`).

Run: ``nice -n 10 .venv/bin/python benchmarks/scoring.py [--n 1000000] [--hidden 16]
[--lut PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads
from threadpoolctl import threadpool_info, threadpool_limits

from nasir.passes.sampling import UniformSampler
from nasir.spaces import get_space
from nasir.strategies.surrogates import (
    MLPEnsemble,
    Ridge,
    Scorer,
    Scores,
    lut_terms,
    mnasnet_terms,
    onehot,
    proxy_latency_ms,
)
from nasir.strategies.surrogates.data import sizes_of

_SECOND = """
import time, numpy as np
t0 = time.perf_counter()
from nasir.strategies.surrogates import kernel as K
t1 = time.perf_counter()
sc = K.Scorer(np.array([2, 3, 4]))
c1 = time.process_time()
sc.score(np.zeros((4, 3), np.int64))
t2 = time.perf_counter()
c2 = time.process_time() - c1
sc.score(np.zeros((5000, 3), np.int8), threads=2)
hits = sum(sum(k.stats.cache_hits.values()) for k in (K._score_kernel, K._score_parallel))
misses = sum(sum(k.stats.cache_misses.values()) for k in (K._score_kernel, K._score_parallel))
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {hits} {misses} {c2:.3f}")
"""


def _timed(fn, *args, **kw):
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args, **kw)
    return out, time.process_time() - c, time.perf_counter() - w


def _threaded_numpy(scorer: Scorer, rows: np.ndarray, chunk: int, method: str,
                    threads: int) -> Scores:
    """The numpy baseline on ``threads`` Python threads over contiguous parts of the rows
    (BLAS limited to one thread by the caller)."""
    parts = np.array_split(np.arange(len(rows)), threads)
    with ThreadPoolExecutor(threads) as pool:
        outs = list(pool.map(lambda p: scorer.score_numpy(rows[p[0]:p[-1] + 1], chunk, method),
                             parts))
    return Scores(*(np.concatenate([getattr(o, k) for o in outs]) for k in
                    ("mean", "std", "ridge", "latency_ms", "macs")))


def _probe(scorer: Scorer, probe: np.ndarray) -> list[tuple[tuple[str, int], float]]:
    """Every numpy first-layer method × chunk on ``probe`` (BLAS one thread), best of two
    interleaved rounds, fastest first (candidates per CPU second)."""
    tried: dict[tuple[str, int], float] = {}
    for _ in range(2):
        for method in ("gather", "take", "einsum", "reduceat", "onehot"):
            for chunk in (512, 1024, 4096):
                _, c, _ = _timed(scorer.score_numpy, probe, chunk, method)
                tried[(method, chunk)] = max(tried.get((method, chunk), 0.0), len(probe) / c)
    return sorted(tried.items(), key=lambda kv: -kv[1])


class _Best:
    """Best CPU and wall seconds of each timed configuration over interleaved repeats; every
    run's outputs are compared with the first one's."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.first: Scores | None = None
        self.equal = True

    def run(self, key: str, fn, *args, **kw) -> None:
        out, c, w = _timed(fn, *args, **kw)
        self.cpu[key] = min(self.cpu.get(key, float("inf")), c)
        self.wall[key] = min(self.wall.get(key, float("inf")), w)
        if self.first is None:
            self.first = out
        self.equal = self.equal and self.first.allclose(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--python-n", type=int, default=5000)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lut", default=None, help="a LatencyLUT SQLite file covering MnasNet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs of each numba and numpy configuration (best one counts)")
    ap.add_argument("--probe", type=int, default=200_000,
                    help="candidates each numpy method / chunk is timed on to pick the best")
    args = ap.parse_args()

    space = get_space("mnasnet")
    sizes = sizes_of(space)
    rng = np.random.default_rng(args.seed)
    macs = mnasnet_terms(space)
    if args.lut:
        from nasir.backends.tvm.lut import LatencyLUT

        latency = lut_terms(space, LatencyLUT(args.lut, "host", scope=space.name))
        lat_src = f"measured LUT {args.lut}"
    else:
        latency = mnasnet_terms(space, proxy_latency_ms())
        lat_src = "roofline stand-in LUT (no measured table covers MnasNet here)"
    train = UniformSampler(space).sample_indices(rng, 256)
    y = np.log(macs.evaluate(train)) + rng.normal(0, 0.05, len(train))
    X = onehot(train, sizes)
    ens = MLPEnsemble(members=args.members, hidden=args.hidden, epochs=100, seed=0).fit(X, y)
    scorer = Scorer(sizes, ens, Ridge(1.0).fit(X, y), latency, macs)
    wide = UniformSampler(space).sample_indices(rng, args.n)
    cands = wide.astype(scorer.index_dtype())
    threads = get_num_threads()
    print(f"space mnasnet: {len(sizes)} decisions, {int(sizes.sum())} one-hot features; "
          f"ensemble {args.members}x{args.hidden}; latency: {lat_src}")
    print(f"rows stored as {cands.dtype} ({cands.itemsize * cands.shape[1]} bytes a "
          f"candidate; the sampler's int64: {wide.itemsize * wide.shape[1]})")

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    blas_threads = max((int(i.get("num_threads", 1)) for i in blas), default=1)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print("BLAS: " + (", ".join(f"{i.get('internal_api')} {i.get('version')} "
                                f"({i.get('architecture')})" for i in blas) or "none found")
          + f", {blas_threads} threads; OPENBLAS_CORETYPE {coretype if coretype else 'not set'}"
          + f"; numba threads {threads}")

    _, c_first, w_first = _timed(scorer.score, cands[:16])
    scorer.score(cands[:50_000])  # compiles (or loads) the parallel kernel
    best = _Best()
    with threadpool_limits(limits=1):
        tried = _probe(scorer, cands[: args.probe])
        top = [k for k, _ in tried[:3]]
        top64 = [k for k, _ in _probe(scorer, wide[: args.probe])[:3]]
        print("numpy methods on", f"{args.probe:,}", f"{cands.dtype} candidates (cand/CPU-s): "
              + ", ".join(f"{m}/{c} {r:,.0f}" for (m, c), r in tried))
        print("numpy timed on all rows: the probe's three fastest, "
              + ", ".join(f"{m}/{c}" for m, c in top) + " (int64 rows: "
              + ", ".join(f"{m}/{c}" for m, c in top64) + ")")
        for _ in range(args.repeats):
            best.run("numba_1t", scorer.score, cands, threads=1)
            for m, c in top:
                best.run(f"numpy_1t {m}/{c}", scorer.score_numpy, cands, c, m)
            best.run("numba_1t_int64", scorer.score, wide, threads=1)
            for m, c in top64:
                best.run(f"numpy_1t_int64 {m}/{c}", scorer.score_numpy, wide, c, m)
        best.run("onehot", scorer.score_numpy, cands, 65536, "onehot")
        sub = cands[: args.python_n]
        slow, c_py, w_py = _timed(scorer.score_python, sub)
    k1 = max((f"numpy_1t {m}/{c}" for m, c in top), key=lambda k: best.cpu[k])
    method, chunk = k1.split()[1].split("/")[0], int(k1.split("/")[1])
    for _ in range(args.repeats):  # the default configurations, as they run
        best.run("numba", scorer.score, cands)
        best.run("numpy", scorer.score_numpy, cands, chunk, method)
        with threadpool_limits(limits=1):
            best.run("numpy_threaded", _threaded_numpy, scorer, cands, chunk, method, threads)
    fast = best.first
    assert fast is not None
    head = Scores(*(getattr(fast, k)[: len(sub)] for k in
                    ("mean", "std", "ridge", "latency_ms", "macs")))
    equal = best.equal and head.allclose(slow)
    if not equal:
        raise SystemExit("outputs differ between numba, numpy and python")

    n = args.n
    cpu = {k: n / c for k, c in best.cpu.items()}
    wall = {k: n / w for k, w in best.wall.items()}
    k64 = max((f"numpy_1t_int64 {m}/{c}" for m, c in top64), key=lambda k: cpu[k])
    base, base64 = k1.split()[1], k64.split()[1]
    for key, src in (("numpy_1t", k1), ("numpy_1t_int64", k64)):
        cpu[key], wall[key] = cpu[src], wall[src]
    cpu["python"], wall["python"] = len(sub) / c_py, len(sub) / w_py
    out = subprocess.run([sys.executable, "-c", _SECOND], capture_output=True, text=True,
                         check=True).stdout.split()
    print(f"first call in this process (compile or cache load): {w_first:.2f} s wall, "
          f"{c_first:.2f} s CPU")
    print(f"second process: import {float(out[0]):.2f} s, first call {float(out[1]):.3f} s "
          f"wall / {float(out[4]):.3f} s CPU, disk cache hits {out[2]}, misses {out[3]}")
    print(f"{'configuration':34} {'cand/CPU-s':>12} {'cand/wall-s':>12}")
    rows = (("numba, 1 thread", "numba_1t"), (f"numpy {base}, BLAS 1 thread", "numpy_1t"),
            ("numba, 1 thread, int64 rows", "numba_1t_int64"),
            (f"numpy {base64}, int64 rows", "numpy_1t_int64"),
            (f"numba, default ({threads} threads)", "numba"),
            (f"numpy as it runs (BLAS {blas_threads})", "numpy"),
            (f"numpy on {threads} Python threads", "numpy_threaded"),
            ("numpy one-hot/65536 (old baseline)", "onehot"),
            (f"python ({len(sub):,}, extrapolated)", "python"))
    for label, k in rows:
        print(f"{label:34} {cpu[k]:12,.0f} {wall[k]:12,.0f}")
    print(f"outputs equal (mean/std to 1e-3, ridge/latency to 1e-9, MACs exact): {equal}")
    r1 = cpu["numba_1t"] / cpu["numpy_1t"]
    np_wall = max(("numpy", "numpy_1t", "numpy_threaded"), key=lambda k: wall[k])
    rd = wall["numba"] / wall[np_wall]
    print(f"numba vs numpy: {rd:.2f}x by default ({threads} numba threads against the "
          f"fastest numpy in wall time, {np_wall}), {r1:.2f}x on one thread (CPU time); "
          f"int64 rows {cpu['numba_1t_int64'] / cpu['numpy_1t_int64']:.2f}x; vs numpy as it "
          f"runs {wall['numba'] / wall['numpy']:.2f}x; vs the old one-hot baseline "
          f"{cpu['numba_1t'] / cpu['onehot']:.2f}x; vs python "
          f"{cpu['numba_1t'] / cpu['python']:.0f}x")
    print(json.dumps({
        "numba_per_s": round(cpu["numba_1t"]),
        "numba_vs_numpy": round(rd, 2),
        "numpy_method": base, "numpy_per_s": round(cpu["numpy_1t"]),
        "numba_vs_numpy_onehot": round(cpu["numba_1t"] / cpu["onehot"], 2),
        "numba_vs_python": round(cpu["numba_1t"] / cpu["python"], 1),
        "numba_wall_per_s": round(wall["numba"]), "outputs_equal": equal,
        "numba_threads": threads,
        "numpy_threads": {"indexing": 1, "blas": blas_threads},
        "numpy_wall_per_s": round(wall[np_wall]), "numpy_wall_config": np_wall,
        "numba_1t_vs_numpy": round(r1, 2),
        "numba_vs_numpy_as_it_runs": round(wall["numba"] / wall["numpy"], 2),
        "numba_vs_numpy_threaded": round(wall["numba"] / wall["numpy_threaded"], 2),
        "rows_dtype": str(cands.dtype),
        "numba_1t_vs_numpy_int64": round(cpu["numba_1t_int64"] / cpu["numpy_1t_int64"], 2),
        "numba_int64_per_s": round(cpu["numba_1t_int64"]),
        "numpy_int64_per_s": round(cpu["numpy_1t_int64"]),
        "numpy_method_int64": base64,
        "load_avg": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
