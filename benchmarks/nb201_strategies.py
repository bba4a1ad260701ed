"""Strategies against the NAS-Bench-201 CIFAR-10 table (issue 7's figures).

Runs every strategy (random search is the baseline, measured in the same run) for
``--seeds`` seeded searches of ``--queries`` distinct-architecture queries each, with the
options of :data:`nasir.bench.runner.TUNED` (MetaQNN's ε schedule scaled to the budget),
prints mean ± std regret and best accuracy, the ratio of each strategy's mean regret to
random search's, and ends with one JSON line.

    .venv/bin/python benchmarks/nb201_strategies.py --queries 150 --seeds 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

STRATEGIES = ["random", "grid", "regularized_evolution", "reinforce", "ppo", "metaqnn"]


def _chunk(args: tuple) -> list:
    name, seeds, queries, options, log = args
    import torch

    torch.set_num_threads(1)
    from nasir.bench.runner import run_search

    runs = []
    for s in seeds:
        r = run_search(name, s, queries, options=options)
        runs.append(r)
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"strategy": name, "seed": s, "regret": r.regret,
                                    "best": r.best_accuracy, "seconds": r.seconds}) + "\n")
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=150)
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--plot", default="", help="optional PNG of best-so-far curves")
    p.add_argument("--log", default="", help="append one JSON line per finished search")
    args = p.parse_args(argv)
    from nasir.bench.runner import TUNED, summarize

    names = [n for n in args.strategies.split(",") if n]
    if "random" not in names:
        names.insert(0, "random")
    options = {n: dict(TUNED.get(n, {})) for n in names}
    if "metaqnn" in options:
        options["metaqnn"]["budget"] = args.queries
    jobs = []
    step = max(1, args.seeds // (4 * max(1, args.workers)))
    for n in names:
        for lo in range(0, args.seeds, step):
            jobs.append((n, list(range(lo, min(args.seeds, lo + step))), args.queries,
                         options[n], args.log))
    start = time.perf_counter()
    results: dict[str, list] = {n: [] for n in names}
    seconds: dict[str, float] = {n: 0.0 for n in names}
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as ex:
            done = list(zip(jobs, ex.map(_chunk, jobs)))
    else:
        done = [(job, _chunk(job)) for job in jobs]
    for job, runs in done:
        results[job[0]].extend(runs)
        seconds[job[0]] += sum(r.seconds for r in runs)
    optimum = results["random"][0].optimum
    summary = summarize(results, args.queries, optimum)
    base = summary["results"][0]["mean_regret"]
    print(f"NB201 table optimum {optimum:.4f}; {args.queries} queries x {args.seeds} seeds "
          f"({time.perf_counter() - start:.0f} s wall)")
    print(f"{'strategy':<22} {'regret (points)':>17} {'best accuracy %':>17} "
          f"{'regret/random':>13} {'s/search':>8}  options")
    for row in summary["results"]:
        n = row["strategy"]
        row["regret_ratio_vs_random"] = row["mean_regret"] / base if base else float("nan")
        row["seconds_per_search"] = seconds[n] / len(results[n])
        row["mean_duplicates"] = float(np.mean([r.duplicates for r in results[n]]))
        row["options"] = options[n]
        print(f"{n:<22} {row['mean_regret']:>8.3f} ± {row['std_regret']:.3f} "
              f"{row['mean_best_accuracy']:>9.3f} ± {row['std_best_accuracy']:.3f} "
              f"{row['regret_ratio_vs_random']:>13.2f} {row['seconds_per_search']:>8.2f}  "
              f"{json.dumps(options[n], sort_keys=True)}")
    if args.plot:
        from nasir.bench.plots import plot_curves

        plot_curves(results, args.plot, optimum)
    by = {r["strategy"]: r for r in summary["results"]}
    summary["must_show"] = {
        "all_beat_random": all(r["mean_regret"] < base for r in summary["results"]
                               if r["strategy"] not in ("random", "grid")),
        "rea_regret_le_0.15": by.get("regularized_evolution", {}).get("mean_regret", 9) <= 0.15,
        "reinforce_regret_le_0.3": by.get("reinforce", {}).get("mean_regret", 9) <= 0.3,
        "ppo_regret_le_0.3": by.get("ppo", {}).get("mean_regret", 9) <= 0.3,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
