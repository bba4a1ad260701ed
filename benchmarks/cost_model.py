"""Does MetaSchedule's XGBoost cost model pay over the random model for the same budget?

Tunes every workload of the same networks into a fresh tuning database once per cost model
(``xgb`` needs ``pip install xgboost-cpu``; ``random`` ranks candidates at random, so the
evolutionary search measures what it samples), with the same trials per workload and seed,
then compiles each network from its database and measures it. Reported per cost model: the
tuning seconds, the sum of the best measured workload times (weighted by how often each
runs) and the networks' measured latency; the ratios random / xgb (> 1: xgb pays).

    .venv/bin/python benchmarks/cost_model.py [--space main|mnasnet] [--networks 2]
        [--trials-per-workload 32] [--cost-models xgb,random]

Last line: ``{"latency_ratio_random_vs_xgb": …, "tuning_s_ratio_random_vs_xgb": …, …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

#: typical layers of a MnasNet network at 64²: stem conv, expansion 1x1, depthwise 3x3
LAYERS = ["""graph @stem {
  %x = input() {shape=[3, 64, 64]}
  %1 = conv2d(%x) {out_channels=32, kernel=3, stride=2}
  %2 = relu(%1)
  return %2
}""", """graph @expand {
  %x = input() {shape=[24, 16, 16]}
  %1 = conv2d(%x) {out_channels=144, kernel=1}
  %2 = relu(%1)
  return %2
}""", """graph @depthwise {
  %x = input() {shape=[144, 16, 16]}
  %1 = depthwise_conv2d(%x) {kernel=3}
  %2 = relu(%1)
  return %2
}"""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="main",
                    help="main (tiny_mnasnet), mnasnet, or layers (three MnasNet-64² layers)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--networks", type=int, default=2)
    ap.add_argument("--trials-per-workload", type=int, default=32)
    ap.add_argument("--cost-models", default="xgb,random")
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)

    from nasir.backends.tvm import MeasureConfig, measure
    from nasir.backends.tvm.tuning_db import TuningDatabase
    from nasir.passes.sampling import sample
    from nasir.spaces import get_space

    if args.space == "layers":
        from nasir.text import parse_graph

        name = "mnasnet layers"
        graphs = [parse_graph(t) for t in LAYERS]
    else:
        sp = (get_space("tiny_mnasnet") if args.space == "main" else
              get_space("mnasnet", input_shape=(3, args.resolution, args.resolution),
                        num_classes=10))
        name = sp.name
        graphs = [sp.instantiate(a) for a in sample(sp, np.random.default_rng(args.seed),
                                                    args.networks)]
    cfg = MeasureConfig(repeats=args.repeats, warmup=2, min_repeat_ms=10)
    res: dict[str, dict] = {}
    for cm in [c.strip() for c in args.cost_models.split(",") if c.strip()]:
        db = TuningDatabase("host", tempfile.mkdtemp(prefix=f"nasir-cm-{cm}-"))
        t0 = time.perf_counter()
        lat, tuned, trials = [], 0, 0
        for g in graphs:
            from nasir.backends.tvm.compile import compile_graph
            from nasir.backends.tvm.measure import measure_compiled

            c = compile_graph(g, "host", db=db, trials_per_workload=args.trials_per_workload,
                              cost_model=cm, seed=args.seed)
            tuned += c.tuning.tuned  # type: ignore[union-attr]
            trials += c.tuning.trials  # type: ignore[union-attr]
            lat.append(float(measure_compiled(c, cfg).median_ms or 0.0))
        tune_s = time.perf_counter() - t0
        entries = [db.read(k) for k in list(db.keys())]
        best = sum(float(np.mean(e["records"][0][1])) for e in entries if e["records"])
        res[cm] = {"tuning_s": round(tune_s, 1), "workloads": tuned, "trials": trials,
                   "sum_best_workload_us": round(best * 1e6, 2),
                   "network_ms": [round(x, 4) for x in lat],
                   "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
        print(f"{cm}: {json.dumps(res[cm])}", flush=True)
        # untuned baseline of the same networks for scale
    base = [float(measure(g, "host", cfg).median_ms or 0.0) for g in graphs]
    out: dict = {"space": name, "networks": len(graphs),
                 "trials_per_workload": args.trials_per_workload, "untuned_ms": base, **res}
    if "xgb" in res and "random" in res:
        x, r = res["xgb"], res["random"]
        out["latency_ratio_random_vs_xgb"] = round(float(np.median(
            np.array(r["network_ms"]) / np.array(x["network_ms"]))), 3)
        out["workload_sum_ratio_random_vs_xgb"] = round(
            r["sum_best_workload_us"] / x["sum_best_workload_us"], 3)
        out["tuning_s_ratio_random_vs_xgb"] = round(r["tuning_s"] / x["tuning_s"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
