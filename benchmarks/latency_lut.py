"""Latency LUT accuracy on random MnasNet candidates: measured end-to-end vs LUT prediction.

For N random candidates of the MnasNet space at a small resolution this compiles each
network with TVM for the host, measures it (median over repeats), predicts it from the
per-layer table (each distinct layer compiled and measured once, constant calibrated on
a few other random networks), and times PyTorch eager on the same network as baseline.

    .venv/bin/python benchmarks/latency_lut.py [--n 30] [--resolution 32] [--db PATH]

Last line: ``{"mape": …, "kendall_tau": …, "compile_s_per_candidate": …,
"tvm_vs_eager_latency_ratio": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def eager_ms(graph, batch: int, repeats: int) -> float:
    """Median latency of the PyTorch backend's module in eager mode (inference)."""
    import torch

    from nasir.backends.torch import lower

    m = lower(graph, seed=0).eval()
    x = torch.randn(batch, *graph.inputs[0].op.shape)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            m(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            m(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calibration", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default=None, help="LUT SQLite file (default: a fresh temp file)")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import kendalltau

    from nasir.backends.tvm import LatencyLUT, MeasureConfig, measure
    from nasir.passes.sampling import sample
    from nasir.spaces import get_space

    # untuned TVM kernels run on one thread (no parallel schedule); compare like with like
    torch.set_num_threads(1)
    space = get_space("mnasnet", input_shape=(3, args.resolution, args.resolution),
                      num_classes=10)
    rng = np.random.default_rng(args.seed)
    cands = sample(space, rng, args.n)
    calib = sample(space, rng, args.calibration)
    cfg = MeasureConfig(batch=args.batch, repeats=args.repeats, warmup=2, min_repeat_ms=5)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="nasir_lut_"), "lut.sqlite")
    lut = LatencyLUT(db, "host", batch=args.batch, config=cfg, scope="mnasnet-bench")

    t0 = time.perf_counter()
    graphs = [space.instantiate(a) for a in cands]
    for g in graphs:
        lut.ensure(g)
    const = lut.calibrate(space.instantiate(a) for a in calib)
    lut_s = time.perf_counter() - t0
    print(f"LUT: {len(lut)} layers ({lut.measured_now} measured now) in {lut_s:.0f} s, "
          f"layer compile {lut.compile_s:.0f} s; constant {const:.3f} ms", flush=True)

    measured, predicted, compile_s, eager = [], [], [], []
    print(f"{'#':>3} {'measured ms':>11} {'LUT ms':>9} {'err %':>7} {'cv':>6} "
          f"{'compile s':>9} {'eager ms':>9}")
    for i, g in enumerate(graphs):
        r = measure(g, "host", cfg)
        if not r.ok:
            print(f"{i:>3} failed: {r.reason}", flush=True)
            continue
        p = lut.predict(g)
        e = eager_ms(g, args.batch, args.repeats)
        measured.append(r.median_ms)
        predicted.append(p)
        compile_s.append(r.compile_s)
        eager.append(e)
        err = 100 * (p - r.median_ms) / r.median_ms
        print(f"{i:>3} {r.median_ms:>11.3f} {p:>9.3f} {err:>7.1f} "
              f"{r.cv:>6.3f} {r.compile_s:>9.2f} {e:>9.3f}", flush=True)
    m, p = np.array(measured), np.array(predicted)
    mape = float(np.mean(np.abs(p - m) / m) * 100)
    tau = float(kendalltau(m, p).statistic)
    ratio = float(np.median(m / np.array(eager)))
    print(f"candidates: {len(m)}/{args.n}  resolution {args.resolution}  batch {args.batch}  "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"MAPE {mape:.1f} % (goal <= 10)  Kendall tau {tau:.3f} (goal >= 0.8)  "
          f"TVM/eager median latency ratio {ratio:.2f}")
    print(json.dumps({"mape": round(mape, 2), "kendall_tau": round(tau, 3),
                      "compile_s_per_candidate": round(float(np.mean(compile_s)), 2),
                      "tvm_vs_eager_latency_ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
