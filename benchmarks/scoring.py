"""Scoring throughput: 1,000,000 MnasNet candidates → predicted accuracy + latency + MACs.

Three implementations of the same scorer, timed in the same run on one core (BLAS limited
to one thread): the fused numba kernel, vectorised numpy (:meth:`Scorer.score_numpy`) and a
per-candidate Python loop (timed on a subsample and extrapolated). Outputs are checked
equal (float32 sums to 1e-3, MACs exactly).

The numpy baseline is the best numpy found, measured here: every first-layer method
(``gather``, ``einsum``, ``reduceat`` over the same grouped tables the kernel reads, and a
dense ``onehot`` matrix times ``w1``) at chunks of 512, 1024 and 4096 rows is timed on
``--probe`` candidates, and the fastest is the baseline ``numba_vs_numpy`` is taken against.
The old baseline (dense one-hot per 65,536 rows) is timed too, for reference.

Rates are candidates per CPU second of this process (``time.process_time``), which is what
"on one core" means on a shared machine; wall-clock rates are printed too. The numba and
numpy scorers are timed ``--repeats`` times, interleaved, and the best run of each counts.
The BLAS library and kernel in use are printed (threadpoolctl): where the environment sets
``OPENBLAS_CORETYPE`` (older OpenBLAS builds need it; it slows a current one), run with
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` to time numpy on its own kernel.

The ensemble (5 MLPs) and ridge are fitted on 256 random candidates against a stand-in
target (log MACs plus noise): MnasNet has no accuracy table here, and throughput does not
depend on what the models learned. Latency comes from a measured TVM LUT with ``--lut``
(every layer of the space must be in it), else from a roofline stand-in LUT with the same
per-block shape (:func:`nasir.strategies.surrogates.proxy_latency_ms`).

Run: ``.venv/bin/python benchmarks/scoring.py [--n 1000000] [--hidden 16] [--lut PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
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
hits = sum(K._score_kernel.stats.cache_hits.values())
misses = sum(K._score_kernel.stats.cache_misses.values())
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {hits} {misses} {c2:.3f}")
"""


def _timed(fn, *args):
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--python-n", type=int, default=5000)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lut", default=None, help="a LatencyLUT SQLite file covering MnasNet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed runs of the numba and numpy scorers (best one counts)")
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
    cands = UniformSampler(space).sample_indices(rng, args.n)
    print(f"space mnasnet: {len(sizes)} decisions, {int(sizes.sum())} one-hot features; "
          f"ensemble {args.members}x{args.hidden}; latency: {lat_src}")

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"BLAS: {', '.join(blas) or 'none found'}; OPENBLAS_CORETYPE "
          f"{coretype if coretype else 'not set'}")

    _, c_first, w_first = _timed(scorer.score, cands[:16])
    with threadpool_limits(limits=1):
        probe = cands[: args.probe]
        tried = {}
        for method in ("gather", "einsum", "reduceat", "onehot"):
            for chunk in (512, 1024, 4096):
                _, c, _ = _timed(scorer.score_numpy, probe, chunk, method)
                tried[(method, chunk)] = len(probe) / c
        method, chunk = max(tried, key=lambda k: tried[k])
        print("numpy methods on", f"{len(probe):,}", "candidates (cand/CPU-s): " + ", ".join(
            f"{m}/{c} {r:,.0f}" for (m, c), r in sorted(tried.items(), key=lambda kv: -kv[1])))
        print(f"numpy baseline: first layer by {method}, chunks of {chunk} rows")
        # interleaved repeats, best of each (as timeit does): load from other processes
        # on a shared machine only ever slows a run down
        c_nb = c_np = c_old = w_nb = w_np = float("inf")
        for _ in range(args.repeats):
            fast, c, w = _timed(scorer.score, cands)
            c_nb, w_nb = min(c_nb, c), min(w_nb, w)
            vec, c, w = _timed(scorer.score_numpy, cands, chunk, method)
            c_np, w_np = min(c_np, c), min(w_np, w)
        old, c_old, _ = _timed(scorer.score_numpy, cands, 65536, "onehot")
        sub = cands[: args.python_n]
        slow, c_py, w_py = _timed(scorer.score_python, sub)
    head = Scores(*(getattr(fast, k)[: len(sub)] for k in
                    ("mean", "std", "ridge", "latency_ms", "macs")))
    equal = fast.allclose(vec) and fast.allclose(old) and head.allclose(slow)
    if not equal:
        raise SystemExit("outputs differ between numba, numpy and python")

    rate = {k: args.n / c for k, c in (("numba", c_nb), ("numpy", c_np), ("onehot", c_old))}
    rate["python"] = len(sub) / c_py
    wall = {"numba": args.n / w_nb, "numpy": args.n / w_np, "python": len(sub) / w_py}
    out = subprocess.run([sys.executable, "-c", _SECOND], capture_output=True, text=True,
                         check=True).stdout.split()
    print(f"first call in this process (compile or cache load): {w_first:.2f} s wall, "
          f"{c_first:.2f} s CPU")
    print(f"second process: import {float(out[0]):.2f} s, first call {float(out[1]):.3f} s "
          f"wall / {float(out[4]):.3f} s CPU, disk cache hits {out[2]}, misses {out[3]}")
    print(f"{'impl':8} {'cand/CPU-s':>14} {'cand/wall-s':>14}  note")
    print(f"{'numba':8} {rate['numba']:14,.0f} {wall['numba']:14,.0f}  all {args.n:,}")
    print(f"{'numpy':8} {rate['numpy']:14,.0f} {wall['numpy']:14,.0f}  all {args.n:,}")
    print(f"{'one-hot':8} {rate['onehot']:14,.0f} {'':>14}  all {args.n:,} (old baseline)")
    print(f"{'python':8} {rate['python']:14,.0f} {wall['python']:14,.0f}  "
          f"{len(sub):,} timed, extrapolated to {args.n:,}: {args.n / rate['python']:,.0f} s")
    print(f"outputs equal (mean/std to 1e-3, ridge/latency to 1e-9, MACs exact): {equal}")
    print(f"numba vs numpy {rate['numba'] / rate['numpy']:.2f}x (vs the old one-hot baseline "
          f"{rate['numba'] / rate['onehot']:.2f}x), vs python "
          f"{rate['numba'] / rate['python']:.0f}x (CPU time)")
    print(json.dumps({"numba_per_s": round(rate["numba"]),
                      "numba_vs_numpy": round(rate["numba"] / rate["numpy"], 2),
                      "numpy_method": f"{method}/{chunk}", "numpy_per_s": round(rate["numpy"]),
                      "numba_vs_numpy_onehot": round(rate["numba"] / rate["onehot"], 2),
                      "numba_vs_python": round(rate["numba"] / rate["python"], 1),
                      "numba_wall_per_s": round(wall["numba"]), "outputs_equal": equal}))


if __name__ == "__main__":
    main()
