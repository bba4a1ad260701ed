"""Scoring throughput: 1,000,000 MnasNet candidates → predicted accuracy + latency + MACs.

Three implementations of the same scorer, timed in the same run on one core (BLAS limited
to one thread): the fused numba kernel, a vectorised numpy version (one-hot matrix per
chunk, BLAS matmuls) and a per-candidate Python loop (timed on a subsample and
extrapolated). Outputs are checked equal (float32 sums to 1e-3, MACs exactly).

Rates are candidates per CPU second of this process (``time.process_time``), which is what
"on one core" means on a shared machine; wall-clock rates are printed too. The numba and
numpy scorers are timed ``--repeats`` times, interleaved, and the best run of each counts.

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
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

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

    _, c_first, w_first = _timed(scorer.score, cands[:16])
    with threadpool_limits(limits=1):
        # interleaved repeats, best of each (as timeit does): load from other processes
        # on a shared machine only ever slows a run down
        c_nb = c_np = w_nb = w_np = float("inf")
        for _ in range(args.repeats):
            fast, c, w = _timed(scorer.score, cands)
            c_nb, w_nb = min(c_nb, c), min(w_nb, w)
            vec, c, w = _timed(scorer.score_numpy, cands)
            c_np, w_np = min(c_np, c), min(w_np, w)
        sub = cands[: args.python_n]
        slow, c_py, w_py = _timed(scorer.score_python, sub)
    head = Scores(*(getattr(fast, k)[: len(sub)] for k in
                    ("mean", "std", "ridge", "latency_ms", "macs")))
    equal = fast.allclose(vec) and head.allclose(slow)
    if not equal:
        raise SystemExit("outputs differ between numba, numpy and python")

    rate = {k: args.n / c for k, c in (("numba", c_nb), ("numpy", c_np))}
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
    print(f"{'python':8} {rate['python']:14,.0f} {wall['python']:14,.0f}  "
          f"{len(sub):,} timed, extrapolated to {args.n:,}: {args.n / rate['python']:,.0f} s")
    print(f"outputs equal (mean/std to 1e-3, ridge/latency to 1e-9, MACs exact): {equal}")
    print(f"numba vs numpy {rate['numba'] / rate['numpy']:.1f}x, vs python "
          f"{rate['numba'] / rate['python']:.0f}x (CPU time)")
    print(json.dumps({"numba_per_s": round(rate["numba"]),
                      "numba_vs_numpy": round(rate["numba"] / rate["numpy"], 2),
                      "numba_vs_python": round(rate["numba"] / rate["python"], 1),
                      "numba_wall_per_s": round(wall["numba"]), "outputs_equal": equal}))


if __name__ == "__main__":
    main()
