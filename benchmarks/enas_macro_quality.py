"""ENAS on its own spaces (digits): derived child vs the median random child.

``--space enas_macro`` (default): 1×8×8, 12 layers, 36 filters, per-layer op + skip
subsets. ``--space enas_micro``: the cell space at 1×8×8 with 8 filters and one cell per
stage (every decision searched: one mixed edge per input, the cell output's projection
sliced per path). Random
baseline: ``--random`` uniform children (rng 100), each trained from scratch with training
seeds 0..``--train-seeds``-1 (training estimator, ``--epochs`` epochs); a child's score is
its mean; the baseline is the median child. ENAS searches with seeds 0..``--seeds``-1
(``--variant``, default ``enas_adam``: the settings notes/issue-9.md's figures were measured
with; ``enas`` runs the official macro/micro search settings, whose 310/150 epochs of
1,000/300 controller children are far beyond a CPU budget: pass ``--search-epochs`` and
``--controller-steps``/``--controller-samples``; ``--search-epochs`` default: the
variant's) and its derived child is trained and scored the same way.

Run: ``.venv/bin/python benchmarks/enas_macro_quality.py [--space enas_micro]``.
Last line JSON: ``{"random_median_acc": …, "enas_acc": […], "enas_median_acc": …,
"beats": …}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.passes.sampling import sample
from nasir.spaces import get_space
from nasir.strategies.oneshot.enas import EnasSearch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--search-epochs", type=int, default=None)
    ap.add_argument("--space", choices=("enas_macro", "enas_micro"), default="enas_macro")
    ap.add_argument("--variant", choices=("enas_adam", "enas"), default="enas_adam")
    ap.add_argument("--controller-steps", type=int, default=None)
    ap.add_argument("--controller-samples", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    opts = {"filters": 8, "cells": 1} if args.space == "enas_micro" else {}
    sp = get_space(args.space, input_shape=(1, 8, 8), num_classes=10, **opts)

    def score(a) -> tuple[float, list[float]]:
        accs = [TrainingEstimator(TrainConfig(epochs=args.epochs, seed=s)).estimate(
            sp.instantiate(a)).val_accuracy for s in range(args.train_seeds)]
        return float(np.mean(accs)), accs

    rnd = []
    for a in sample(sp, np.random.default_rng(100), args.random):
        m, accs = score(a)
        rnd.append(m)
        print(f"random {m:.4f} {np.round(accs, 3).tolist()}", flush=True)
    base = statistics.median(rnd)
    print(f"median random child: {base:.4f}", flush=True)
    found = []
    for s in range(args.seeds):
        t = time.process_time()
        given = {"epochs": args.search_epochs, "controller_steps": args.controller_steps,
                 "controller_samples": args.controller_samples}
        kw = {k: v for k, v in given.items() if v is not None}
        res = EnasSearch(sp, seed=s, variant=args.variant, **kw).search()
        cpu = time.process_time() - t
        m, accs = score(res.assignment)
        found.append(m)
        print(f"enas seed {s}: {m:.4f} {np.round(accs, 3).tolist()} (search {cpu:.0f} CPU s) "
              f"{res.assignment.text()}", flush=True)
    med = statistics.median(found)
    print(f"enas per seed {[round(x, 4) for x in found]} (median {med:.4f}) vs random median "
          f"{base:.4f}: beats {sum(x > base for x in found)}/{len(found)}")
    print(json.dumps({"space": args.space, "variant": args.variant,
                      "random_median_acc": round(base, 4),
                      "enas_acc": [round(x, 4) for x in found],
                      "enas_median_acc": round(med, 4), "beats": med > base}))


if __name__ == "__main__":
    main()
