"""End to end on digits: search → derived assignment → retrain from scratch → val accuracy,
TVM host latency and MACs; against the median random child of the same space.

Space: NB201 on digits (1×8×8, C=8, one cell per stage), the real weight-sharing supernet.
For seeds 0..SEEDS-1 each of DARTS (first order), ENAS, FBNet and ProxylessNAS searches
``SEARCH_EPOCHS`` epochs; the derived child and ``RANDOM`` uniform random children per
seed are trained from scratch with the same budget (training estimator, ``TRAIN_EPOCHS``
epochs, seed = the search seed). Also reported: where each derived NB201 cell ranks in the
CIFAR-10 NAS-Bench-201 table (1 = best of 15,625), how many of DARTS' six edges are
``skip_connect``/``none`` (the all-skip collapse), and ProxylessNAS with two latency
targets T (measured latency of the derived child vs T).

    .venv/bin/python benchmarks/oneshot_quality.py
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np
import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.measure import MeasureConfig, measure
from nasir.bench.nb201_table import NB201Table
from nasir.passes.sampling import sample
from nasir.spaces import get_space
from nasir.strategies.oneshot.common import decision_latency
from nasir.strategies.oneshot.darts import DartsSearch
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

SEEDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SEARCH_EPOCHS = 4
TRAIN_EPOCHS = 5
RANDOM = 3
MCFG = MeasureConfig(repeats=7, min_repeat_ms=5)


def main() -> None:
    torch.set_num_threads(1)
    sp = get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=8,
                   cells_per_stage=1)
    table = NB201Table.load()
    all_acc = table.all_accuracies()
    lut = LatencyLUT("runs/oneshot_lut.db", "host", config=MeasureConfig(repeats=5,
                                                                       min_repeat_ms=2))
    rows = {k: v * 1000 for k, v in decision_latency(sp, lut).items()}

    def train(a, seed):
        r = TrainingEstimator(TrainConfig(epochs=TRAIN_EPOCHS, seed=seed)).estimate(
            sp.instantiate(a))
        return r.val_accuracy, r.macs

    def rank(a):
        return int((all_acc > table.peek(a)).sum()) + 1

    makers = {
        "darts": lambda s: DartsSearch(sp, seed=s, epochs=SEARCH_EPOCHS),
        "enas": lambda s: EnasSearch(sp, seed=s, epochs=SEARCH_EPOCHS),
        "fbnet": lambda s: FBNetSearch(sp, seed=s, epochs=SEARCH_EPOCHS, latency_rows=rows),
        "proxylessnas": lambda s: ProxylessSearch(sp, seed=s, epochs=SEARCH_EPOCHS,
                                                  latency_rows=rows, target_us=300.0),
    }
    out: dict = {"random": [], **{m: [] for m in makers}}
    for s in range(SEEDS):
        for a in sample(sp, np.random.default_rng(100 + s), RANDOM):
            acc, macs = train(a, s)
            out["random"].append({"acc": acc, "macs": macs, "rank": rank(a)})
        for m, make in makers.items():
            res = make(s).search()
            a = res.assignment
            acc, macs = train(a, s)
            lat = measure(sp.instantiate(a), "host", MCFG).median_ms
            rec = {"seed": s, "acc": acc, "macs": macs, "lat_ms": lat, "rank": rank(a),
                   "cifar10": table.peek(a), "search_s": round(res.wall_s, 1),
                   "skip": sum(v == "skip_connect" for v in a.values()),
                   "none": sum(v == "none" for v in a.values()), "arch": a.text()}
            out[m].append(rec)
            print(m, json.dumps(rec), flush=True)
    rnd = statistics.median(r["acc"] for r in out["random"])
    print(f"median random child val acc ({len(out['random'])} children): {rnd:.3f}")
    summary: dict = {"random_median_acc": round(rnd, 4)}
    for m in makers:
        accs = [r["acc"] for r in out[m]]
        med = statistics.median(accs)
        print(f"{m:>13}: median val acc {med:.3f} (per seed {[round(x, 3) for x in accs]}), "
              f"beats random median: {med > rnd}; NB201 ranks {[r['rank'] for r in out[m]]}")
        summary[m] = {"median_acc": round(med, 4), "beats_random": med > rnd,
                      "ranks": [r["rank"] for r in out[m]]}
    summary["darts_skip_edges"] = [r["skip"] for r in out["darts"]]
    summary["darts_none_edges"] = [r["none"] for r in out["darts"]]
    targets = {}
    for t_us in (400.0, 150.0):
        res = ProxylessSearch(sp, seed=0, epochs=SEARCH_EPOCHS, latency_rows=rows,
                              target_us=t_us, alpha=0.2, beta=0.3).search()
        lat = measure(sp.instantiate(res.assignment), "host", MCFG).median_ms
        targets[t_us] = {"measured_us": round((lat or 0) * 1000, 1),
                         "lut_us": round(res.extra["predicted_latency_us"], 1),
                         "arch": res.assignment.text()}
        print(f"proxylessnas T={t_us}µs: measured {targets[t_us]['measured_us']}µs, "
              f"LUT {targets[t_us]['lut_us']}µs, {res.assignment.text()}", flush=True)
    summary["proxyless_targets"] = targets
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
