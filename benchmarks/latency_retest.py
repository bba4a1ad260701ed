"""How reproducible is one latency measurement of a network on this machine?

For ``--candidates`` held-out candidates of a space (the main job's ``tiny_mnasnet`` by
default), each network is *prepared* ``--preparations`` times — the TVM library compiled
(from ``--tuning-db`` when given) and an ONNX Runtime session made, as
:func:`~nasir.backends.tvm.host_compare.prepare_host_paths` does for a run's measurement — and
each preparation is *timed* ``--timings`` times in a row (median over repeats, the run's
noise policy). Figures per path:

- ``within_cv``: median over candidates and preparations of the spread (std / mean) of the
  timings of one preparation — what repeating a measurement right away changes;
- ``between_cv``: median over candidates of the spread of the preparations' medians — what
  measuring the same network again a few seconds later (as a search and a deployment do)
  changes;
- ``retest_tau``: mean Kendall τ over pairs of preparations between the candidates'
  latencies — the ceiling of any rank agreement between two measurements of the same
  candidates here (``latency_fidelity.py``'s ``rank_tau`` compares two such measurements).

    .venv/bin/python benchmarks/latency_retest.py [--space tiny_mnasnet] [--candidates 8]
        [--preparations 3] [--timings 3] [--threads 1] [--tuning-db DIR] [--resolution 64]
        [--settle-s 30]

``--settle-s S`` times every preparation only while the machine runs at its full speed
(:mod:`nasir.backends.tvm.machine_speed`, as a run's ``latency.settle_s`` does), waiting up
to S seconds for it; ``full_speed_fraction`` is the share of timings that got it.

Run it on a quiet machine. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny_mnasnet")
    ap.add_argument("--resolution", type=int, default=None,
                    help="input size for a space that takes one (mnasnet: e.g. 64)")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--preparations", type=int, default=3)
    ap.add_argument("--timings", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=5000, help="held-out sampling seed")
    ap.add_argument("--tuning-db", default=None, help="compile TVM from this database")
    ap.add_argument("--paths", default="tvm,onnxruntime")
    ap.add_argument("--settle-s", type=float, default=0.0,
                    help="time only at the machine's full speed, waiting up to this long "
                         "(latency.settle_s; 0: at once)")
    ap.add_argument("--speed-tol", type=float, default=0.25)
    args = ap.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts

    from scipy.stats import kendalltau

    from nasir.backends.tvm import MeasureConfig
    from nasir.backends.tvm.host_compare import prepare_host_paths
    from nasir.passes.sampling import sample
    from nasir.spaces import get_space

    db = None
    if args.tuning_db:
        from nasir.backends.tvm.tuning_db import TuningDatabase

        db = TuningDatabase("host", args.tuning_db)
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    sp = (get_space(args.space, input_shape=(3, args.resolution, args.resolution),
                    num_classes=10) if args.resolution else get_space(args.space))
    cands = sample(sp, np.random.default_rng(args.seed), args.candidates)
    cfg = MeasureConfig(repeats=15, warmup=2, min_repeat_ms=10, settle_s=args.settle_s,
                        speed_tol=args.speed_tol)
    speeds: list[float] = []
    # t[path][candidate][preparation][timing]
    t = {p: np.zeros((len(cands), args.preparations, args.timings)) for p in paths}
    for i, a in enumerate(cands):
        g = sp.instantiate(a)
        for k in range(args.preparations):
            hp = prepare_host_paths(g, paths, db=db, threads=args.threads)
            for r in range(args.timings):
                got = hp.time(cfg)
                for p in paths:
                    t[p][i, k, r] = got[p].median_ms
                    if got[p].speed is not None:
                        speeds.append(got[p].speed.speed)
        print(f"{i:>3} " + "  ".join(
            f"{p} " + " | ".join(" ".join(f"{x:.4f}" for x in t[p][i, k])
                                 for k in range(args.preparations)) for p in paths), flush=True)
    out: dict = {"space": args.space, "candidates": len(cands), "threads": args.threads,
                 "preparations": args.preparations, "timings": args.timings,
                 "settle_s": args.settle_s, "speed_tol": args.speed_tol}
    if speeds:
        from nasir.backends.tvm.machine_speed import at_full_speed

        out["full_speed_fraction"] = round(float(np.mean(
            [at_full_speed(x, args.speed_tol) for x in speeds])), 3)
    for p in paths:
        x = t[p]
        within = x.std(axis=2) / x.mean(axis=2)
        prep = np.median(x, axis=2)
        between = prep.std(axis=1) / prep.mean(axis=1)
        taus = [kendalltau(prep[:, a], prep[:, b]).statistic
                for a, b in itertools.combinations(range(args.preparations), 2)]
        out[p] = {"within_cv": round(float(np.median(within)), 4),
                  "between_cv": round(float(np.median(between)), 4),
                  "between_cv_max": round(float(between.max()), 4),
                  "retest_tau": round(float(np.mean(taus)), 3) if taus else None}
        print(f"{p}: {json.dumps(out[p])}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
