"""NetAdapt with measured TVM latency: shrink a network to a latency budget, then retrain.

Starts from the widest, deepest network of ``tiny_mnasnet`` on digits (1×8×8: every width
decision at its largest option, MBConv6, kernel 5, SE, skips), measures its latency with TVM
on the host (whole compiled network, median of 7, one TVM thread, SQLite latency cache so
no network is compiled twice), sets the budget to ``--budget`` × that latency and runs
:class:`~nasir.strategies.oneshot.netadapt.NetAdaptSearch` with the *measured* latency as
its latency function (the start network trained ``--pretrain`` epochs first; each step:
shrink one width decision, short-term fine-tune each proposal from the weights of the
network it was pruned from, keep the most accurate with its weights; ``--no-inherit``
retrains every proposal from scratch instead). Both the start and the simplified network
are then trained from scratch with the same budget and seeds and compared; the simplified
one is also long-term fine-tuned from its NetAdapt weights (NetAdapt's last step).

Run: ``.venv/bin/python benchmarks/netadapt.py [--budget 0.6]``.
Last line JSON: ``{"budget_met": …, "latency_ratio": …, "start_acc": …, "final_acc": …,
"final_finetuned_acc": …, "iterations": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np
import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.tvm.cache import LatencyCache
from nasir.backends.tvm.measure import MeasureConfig, measure
from nasir.spaces import get_space
from nasir.strategies.oneshot.netadapt import NetAdaptSearch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=0.6,
                    help="latency budget as a fraction of the start network's")
    ap.add_argument("--epochs", type=int, default=5, help="long-term training epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--finetune", type=int, default=1,
                    help="short-term fine-tune epochs per proposal (from scratch, "
                         "--no-inherit, 1 leaves every proposal at chance: use 3)")
    ap.add_argument("--pretrain", type=int, default=5,
                    help="epochs the start network trains before simplification")
    ap.add_argument("--no-inherit", action="store_true",
                    help="train every proposal from scratch (no weight inheritance)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    start = {}
    for d in sp.decisions:
        kind = d.label.split("_", 1)[1]
        start[d.label] = {"op": "mbconv6", "kernel": 5, "se": 0.25, "skip": True}.get(
            kind, max(d.options) if kind in ("filters", "layers") else d.options[0])
    cache = LatencyCache(os.path.join(tempfile.mkdtemp(prefix="nasir_netadapt_"), "lat.db"))
    cfg = MeasureConfig(repeats=7, min_repeat_ms=5)
    measured: list[float] = []

    def latency_ms(g) -> float:
        r = measure(g, "host", cfg, cache=cache)
        if r.median_ms is None:
            raise SystemExit(f"TVM could not measure: {r.reason}")
        measured.append(r.median_ms)
        return float(r.median_ms)

    lat0 = latency_ms(sp.instantiate(sp.check(start)))
    budget = args.budget * lat0
    print(f"start: {lat0 * 1000:.1f} µs; budget {budget * 1000:.1f} µs", flush=True)
    t = time.perf_counter()
    searcher = NetAdaptSearch(sp, seed=0, budget_ms=budget, latency_fn=latency_ms,
                              finetune_epochs=args.finetune, pretrain_epochs=args.pretrain,
                              inherit=not args.no_inherit)
    res = searcher.search(start)
    search_s = time.perf_counter() - t
    for h in res.history:
        acc = h.get("val_accuracy")
        print(f"iter {h['iter']}: {h['latency_ms'] * 1000:.1f} µs"
              + (f", short-term val {acc:.3f} of {h['proposals']} proposals"
                 if "proposals" in h else
                 f", start trained {args.pretrain} epochs: val {acc:.3f}" if acc else ""))
    final = dict(res.assignment)
    lat1 = float(res.extra["latency_ms"])
    # re-measure the result without the cache (a fresh compile) to check the figure
    fresh = measure(sp.instantiate(res.assignment), "host", cfg)
    changed = {k: (start[k], v) for k, v in final.items() if start[k] != v}
    print(f"simplified in {res.epochs} iterations, {search_s:.0f} s ({len(measured)} "
          f"latency queries): {lat1 * 1000:.1f} µs (fresh re-measure "
          f"{(fresh.median_ms or float('nan')) * 1000:.1f} µs), budget met: "
          f"{res.extra['met']}; changed {changed}", flush=True)

    def trained(a) -> list[float]:
        return [TrainingEstimator(TrainConfig(epochs=args.epochs, seed=s)).estimate(
            sp.instantiate(sp.check(a))).val_accuracy for s in range(args.seeds)]

    acc0, acc1 = trained(start), trained(final)
    print(f"trained from scratch, {args.epochs} epochs, seeds 0-{args.seeds - 1}: start "
          f"{np.mean(acc0):.4f} {np.round(acc0, 3).tolist()}, simplified {np.mean(acc1):.4f} "
          f"{np.round(acc1, 3).tolist()}")
    tuned = None
    if searcher.state is not None:
        tuned = [TrainingEstimator(TrainConfig(epochs=args.epochs, seed=s)).estimate(
            sp.instantiate(res.assignment), init=searcher.state).val_accuracy
            for s in range(args.seeds)]
        print(f"simplified, long-term fine-tuned {args.epochs} epochs from its NetAdapt "
              f"weights: {np.mean(tuned):.4f} {np.round(tuned, 3).tolist()}")
    print(json.dumps({"budget_met": bool(res.extra["met"]),
                      "latency_ratio": round(lat1 / lat0, 3),
                      "start_us": round(lat0 * 1000, 1), "final_us": round(lat1 * 1000, 1),
                      "start_acc": round(float(np.mean(acc0)), 4),
                      "final_acc": round(float(np.mean(acc1)), 4),
                      "final_finetuned_acc": None if tuned is None else
                      round(float(np.mean(tuned)), 4), "inherit": not args.no_inherit,
                      "iterations": res.epochs, "search_s": round(search_s, 1)}))


if __name__ == "__main__":
    main()
