"""``nasir bench nb201``: seeded searches of strategies against the NB201 table.

Random search always runs in the same invocation as the baseline. Strategies use the
settings tuned for a ~150-query budget (:data:`nasir.bench.runner.TUNED`) unless
``--paper-defaults``; ``--set NAME.KEY=VALUE`` overrides one option (VALUE is JSON).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nasir.bench.plots import plot_curves  # re-exported: its old home
from nasir.errors import SpecError

__all__ = ["add_parser", "parse_sets", "parse_strategies", "plot_curves"]


def parse_strategies(values: list[str] | None) -> list[str]:
    """Strategy names from repeated / comma-separated ``--strategy``; random first.

    >>> parse_strategies(["ppo,reinforce", "random", "ppo"])
    ['random', 'ppo', 'reinforce']
    """
    from nasir.strategies import STRATEGIES

    names = ["random"]
    for v in values or []:
        for n in (x.strip() for x in v.split(",")):
            if not n:
                continue
            if n not in STRATEGIES:
                raise SpecError(f"unknown strategy {n!r}", where="--strategy",
                                hint=f"known strategies: {', '.join(STRATEGIES)}")
            if n not in names:
                names.append(n)
    return names


def parse_sets(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` overrides (VALUE parsed as JSON, else kept as a string).

    >>> parse_sets(["reinforce.lr=0.01", "grid.order=shuffled"])
    {'reinforce': {'lr': 0.01}, 'grid': {'order': 'shuffled'}}
    """
    out: dict[str, dict[str, Any]] = {}
    for v in values or []:
        key, eq, raw = v.partition("=")
        name, dot, opt = key.partition(".")
        if not (eq and dot and name and opt):
            raise SpecError(f"bad --set {v!r}", hint="write NAME.KEY=VALUE, e.g. reinforce.lr=0.01")
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out.setdefault(name, {})[opt] = val
    return out


def _run(args: argparse.Namespace) -> int:
    import torch

    from nasir.bench.runner import TUNED, run_benchmark, summarize

    if args.queries < 1 or args.seeds < 1:
        raise SpecError(f"--queries and --seeds must be >= 1, got {args.queries} and "
                        f"{args.seeds}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise SpecError(f"--plot writes a PNG file, got {args.plot!r}",
                        hint="give a file name ending in .png")
    names = parse_strategies(args.strategy)
    options: dict[str, dict[str, Any]] = {}
    for n in names:
        options[n] = {} if args.paper_defaults else dict(TUNED.get(n, {}))
        if n == "metaqnn" and not args.paper_defaults:
            options[n]["budget"] = args.queries
    for n, opts in parse_sets(args.set).items():
        if n not in names:
            raise SpecError(f"--set names strategy {n!r}, which is not being run",
                            hint=f"running: {', '.join(names)}")
        options[n].update(opts)
    torch.set_num_threads(1)  # the controllers are tiny: threads only add overhead
    results = run_benchmark(names, args.queries, args.seeds, options=options,
                            first_seed=args.first_seed)
    optimum = next(iter(results.values()))[0].optimum
    summary = summarize(results, args.queries, optimum)
    base = summary["results"][0]["mean_regret"]
    if not args.json or args.verbose:
        print(f"NB201 table (CIFAR-10, optimum {optimum:.4f}), {args.queries} queries, "
              f"{args.seeds} seeds")
        for row in summary["results"]:
            ratio = row["mean_regret"] / base if base > 0 else float("nan")
            print(f"  {row['strategy']:<22} regret {row['mean_regret']:.3f} ± "
                  f"{row['std_regret']:.3f}  best {row['mean_best_accuracy']:.3f} ± "
                  f"{row['std_best_accuracy']:.3f}  regret/random {ratio:.2f}  "
                  f"options {json.dumps(options[row['strategy']], sort_keys=True)}")
    if args.plot:
        plot_curves(results, args.plot, optimum)
        if not args.json:
            print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(summary))
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("bench", help="run strategies against a tabular benchmark",
                       description="Run N seeded searches per strategy against the "
                                   "NAS-Bench-201 CIFAR-10 table (random search included "
                                   "as the baseline); report best accuracy and regret.")
    p.add_argument("table", choices=["nb201"], help="the tabular benchmark")
    p.add_argument("--strategy", action="append", metavar="NAME",
                   help="strategy to run (repeatable or comma-separated)")
    p.add_argument("--queries", type=int, default=150, metavar="Q",
                   help="distinct architectures each search may look up (default 150)")
    p.add_argument("--seeds", type=int, default=10, metavar="N",
                   help="searches per strategy (default 10)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="seeds are S, S+1, … (default 0)")
    p.add_argument("--set", action="append", metavar="NAME.KEY=VALUE",
                   help="override a strategy option (JSON value), repeatable")
    p.add_argument("--paper-defaults", action="store_true",
                   help="use the strategies' own defaults instead of the 150-query tuning")
    p.add_argument("--plot", metavar="FILE.png", help="draw best-so-far curves with bands")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on the last line")
    p.add_argument("--verbose", action="store_true", help="with --json, also print the table")
    p.set_defaults(run=_run)
