"""MetaSchedule tuning vs TVM's default (untuned) build of the same network, same run.

Compiles a reference network for the host twice — default pipeline and MetaSchedule-tuned
with a global trial budget — checks both give the same outputs, measures both with the same
:class:`~nasir.backends.tvm.measure.MeasureConfig`, and prints the speed-up of tuning, the
tuning wall time and how many candidates were measured.

Run: ``.venv/bin/python benchmarks/tvm_tuning.py [--space nb201 --arch resnet] [--trials 64]``
(minutes: every candidate is built and run by MetaSchedule's local builder/runner).
Last line JSON: ``{"tuned_vs_untuned_speedup": …, "tuning_s": …, "measured_candidates": …}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from nasir.backends.tvm import MeasureConfig
from nasir.backends.tvm.compile import compile_graph, tuning_records
from nasir.backends.tvm.measure import measure_compiled
from nasir.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()

    opts = {"input_shape": (3, 32, 32), "channels": 16, "cells_per_stage": 1} \
        if args.space == "nb201" else {}
    sp = get_space(args.space, **opts)
    g = sp.instantiate(sp.reference(args.arch))
    cfg = MeasureConfig(repeats=args.repeats, warmup=5)

    t0 = time.perf_counter()
    base = compile_graph(g, "host")
    base_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        tuned = compile_graph(g, "host", tune_trials=args.trials, work_dir=wd)
        tune_s = time.perf_counter() - t0
        records = tuning_records(wd)
    same = bool(np.allclose(base.run()[0], tuned.run()[0], rtol=1e-4, atol=1e-4))
    if not same:
        raise SystemExit("tuned and untuned builds give different outputs")
    rb = measure_compiled(base, cfg)
    rt = measure_compiled(tuned, cfg)
    speedup = float(rb.median_ms) / float(rt.median_ms)
    print(f"{args.space}:{args.arch} on host, {args.trials} trials")
    print(f"untuned: compile {base_s:6.1f} s  median {rb.median_ms:.4f} ms (cv {rb.cv:.3f})")
    print(f"tuned:   compile {tune_s:6.1f} s  median {rt.median_ms:.4f} ms (cv {rt.cv:.3f}); "
          f"{records} candidates measured")
    print(f"outputs equal: {same}; tuned is {speedup:.2f}x the untuned speed")
    print(json.dumps({"tuned_vs_untuned_speedup": round(speedup, 3),
                      "tuning_s": round(tune_s, 1), "measured_candidates": records,
                      "untuned_ms": rb.median_ms, "tuned_ms": rt.median_ms}))


if __name__ == "__main__":
    main()
