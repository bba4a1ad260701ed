"""PNAS on the PNAS cell space with the real training estimator (8×8 digits).

Progressive search as in Liu et al. (ECCV 2018): cells grow from 1 block to ``--blocks``;
level 1 is a seeded random sample of ``--first`` 1-block cells (the paper trains all 136
distinct ones), then at each level every child (every setting of the next block) of the
``--beam`` best cells is ranked by the MLP-ensemble surrogate, the ``--beam`` best ranked
are trained, and the surrogate is refitted. Every trial trains a real network
(:class:`nasir.runtime.estimators.TrainingEstimator`: Adam, ``--epochs`` epochs on
scikit-learn's digits, batch 16, validation accuracy) with the same training seed, so
differences between trials come from the architectures.

The space is ``get_space("pnas", progressive=True, blocks=B, stem="cifar", filters=F,
cells=N, dropout=0)``: a level-``b`` architecture is a real ``b``-block cell (decision
``cell_blocks``). The CIFAR stem keeps the 8×8 input at 8×8 up to the first cell (the
ImageNet stem's three stride-2 layers leave 1×1 maps, which is why PNAS networks stayed at
chance on digits); the two strided cells bring it to 4×4 and 2×2.

Baseline, same run (``--no-baseline`` skips it): random search with the same number of
trials on the same space (uniform over block counts 1…B and all block settings).

Prints per level: trained cells, best validation accuracy, Kendall τ of the surrogate's
predictions against the accuracies of the children it chose; then the JSON line.

Run: ``.venv/bin/python benchmarks/pnas_cells.py [--blocks 3 --beam 4 --first 8]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def run(strategy: Any, estimator: Any, trials: int, train_seed: int) -> dict[str, Any]:
    """Drive ``strategy`` for ``trials`` one-at-a-time trials; accuracies, times."""
    accs, walls, cpus = [], [], []
    for _ in range(trials):
        (a,) = strategy.propose(1)
        w, c = time.perf_counter(), time.process_time()
        m = estimator.evaluate(strategy.space, a, seed=train_seed)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        accs.append(m["accuracy"])
        strategy.feedback(a, {"accuracy": m["accuracy"]})
    return {"accuracy": accs, "wall_s": walls, "cpu_s": cpus}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=3, help="B: grow cells to B blocks")
    ap.add_argument("--beam", type=int, default=4, help="K: cells trained per level")
    ap.add_argument("--first", type=int, default=8, help="level-1 cells trained")
    ap.add_argument("--filters", type=int, default=8)
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0, help="strategy seed")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    from nasir.runtime.estimators import TrainingEstimator
    from nasir.spaces import get_space
    from nasir.strategies.base import make_strategy

    space = get_space("pnas", input_shape=(1, 8, 8), num_classes=10, progressive=True,
                      blocks=args.blocks, stem="cifar", filters=args.filters,
                      cells=args.cells, dropout=0.0)
    est = TrainingEstimator({"epochs": args.epochs, "lr": args.lr,
                             "batch_size": args.batch_size})
    pnas = make_strategy("pnas", space, seed=args.seed, beam=args.beam, first=args.first,
                         members=5, hidden=32, epochs=200)
    trials = args.first + (args.blocks - 1) * args.beam
    print(f"space {space}; {trials} trials per strategy; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    t0 = time.perf_counter()
    p = run(pnas, est, trials, args.train_seed)
    pnas_wall = time.perf_counter() - t0
    rep = pnas.report()
    for lv, r in rep.items():
        tau = "n/a" if r["tau"] is None else f"{r['tau']:+.3f}"
        print(f"pnas level {lv}: {r['trained']} trained, best val acc {r['best']:.4f}, "
              f"surrogate tau on trained children {tau}", flush=True)
    for a, m in pnas.results:
        print(f"  L{pnas.order.level(np.array(space.indices(a)))} acc {m['accuracy']:.4f} "
              f"pred {a.provenance.get('pnas_pred', float('nan')):+.3f} "
              f"{ {k: v for k, v in a.items() if k in space.active(a)} }")
    taus = [r["tau"] for lv, r in rep.items() if r["tau"] is not None]
    out: dict[str, Any] = {
        "blocks": args.blocks, "beam": args.beam, "first": args.first, "trials": trials,
        "per_level_best_val_acc": {str(k): round(r["best"], 4) for k, r in rep.items()},
        "surrogate_tau_per_level": {str(k): None if r["tau"] is None else round(r["tau"], 3)
                                    for k, r in rep.items() if k > 1},
        "surrogate_tau_mean": round(float(np.mean(taus)), 3) if taus else None,
        "pnas_best_val_acc": round(max(p["accuracy"]), 4),
        "pnas_wall_s": round(pnas_wall, 1), "pnas_cpu_s": round(sum(p["cpu_s"]), 1),
        "cpu_s_per_trial": round(float(np.mean(p["cpu_s"])), 2),
    }
    print(f"pnas: best {max(p['accuracy']):.4f} in {pnas_wall:.0f} s wall, "
          f"{sum(p['cpu_s']):.0f} s CPU", flush=True)
    if not args.no_baseline:
        rnd = make_strategy("random", space, seed=args.seed)
        t0 = time.perf_counter()
        r = run(rnd, est, trials, args.train_seed)
        wall = time.perf_counter() - t0
        print(f"random: best {max(r['accuracy']):.4f} in {wall:.0f} s wall, "
              f"{sum(r['cpu_s']):.0f} s CPU; pnas/random best accuracy "
              f"{max(p['accuracy']) / max(r['accuracy']):.4f}, mean accuracy "
              f"{np.mean(p['accuracy']) / np.mean(r['accuracy']):.4f}", flush=True)
        out.update({"random_best_val_acc": round(max(r["accuracy"]), 4),
                    "pnas_vs_random_best": round(max(p["accuracy"]) / max(r["accuracy"]), 4),
                    "pnas_vs_random_mean": round(float(np.mean(p["accuracy"]))
                                                 / float(np.mean(r["accuracy"])), 4),
                    "random_wall_s": round(wall, 1)})
    out["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
