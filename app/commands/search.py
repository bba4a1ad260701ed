"""``nasir search``: run an experiment (no arguments: the main job, hardware-aware on digits).

Options override an experiment file (``-c FILE.toml``) or a paper preset (``--preset NAME``,
:mod:`nasir.runtime.presets`), which override the defaults.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from nasir.commands._runtime_cli import (
    one_line_errors,
    parse_kv,
    positive_float,
    positive_int,
    print_summary,
    seconds,
)

__all__ = ["add_experiment_options", "add_parser", "experiment_from_args", "run_experiment"]


def _latency_paths(text: str) -> str | list[str]:
    from nasir.runtime.latency_measure import DEPLOY_PATHS

    if text.strip() == "auto":
        return "auto"
    paths = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in paths if p not in DEPLOY_PATHS]
    if bad or not paths:
        raise argparse.ArgumentTypeError(
            f"unknown path {bad[0]!r}: use auto or a comma list of tvm, onnxruntime, eager"
            if bad else "give auto or a comma list of tvm, onnxruntime, eager")
    return paths


def _objective(text: str) -> tuple[str, str]:
    key, _, sense = text.partition(":")
    sense = sense or "max"
    if not key or sense not in ("max", "min"):
        raise argparse.ArgumentTypeError(f"expected METRIC:max or METRIC:min, got {text!r}")
    return key, sense


def _constraint(text: str) -> tuple[str, float]:
    key, sep, val = text.partition("<=")
    try:
        bound = float(val)
    except ValueError:
        bound = float("nan")
    if not sep or not key or bound != bound:
        raise argparse.ArgumentTypeError(f"expected METRIC<=NUMBER, got {text!r}")
    return key.strip(), bound


def add_experiment_options(p: argparse.ArgumentParser) -> None:
    """The experiment options shared by ``search`` and ``demo``."""
    from nasir.runtime.driver import STRATEGY_ALIASES
    from nasir.runtime.experiment import (
        ESTIMATORS,
        EXECUTORS,
        LATENCY_POLICIES,
        REWARDS,
        TARGET_KINDS,
    )
    from nasir.spaces import SPACES
    from nasir.strategies import STRATEGIES

    strategies = sorted(set(STRATEGIES) | set(STRATEGY_ALIASES))
    p.add_argument("-c", "--config", metavar="FILE", help="experiment file (.toml or .json)")
    g = p.add_argument_group("search")
    g.add_argument("--preset", metavar="NAME",
                   help="a paper's experiment: nasrl, nasnet, metaqnn, pnas, enas, mnasnet, "
                        "amoebanet, proxylessnas, fbnet, darts or netadapt (`nasir presets` "
                        "lists their settings and deviations); the other options override it")
    g.add_argument("--space", metavar="SPACE",
                   help=f"search space: a built-in ({', '.join(sorted(SPACES))}), "
                        "path/to/file.py:function or package.module:function; "
                        "default tiny_mnasnet")
    g.add_argument("--space-opt", action="append", type=parse_kv("--space-opt"), default=[],
                   metavar="KEY=VALUE", help="option of the space's build, e.g. num_classes=10")
    g.add_argument("--data", metavar="DATA",
                   help="data trials train on: digits (default), cifar10, cifar100, mnist, "
                        "fashion_mnist, svhn, npz:PATH, imagefolder:PATH or module:function")
    g.add_argument("--data-opt", action="append", type=parse_kv("--data-opt"), default=[],
                   metavar="KEY=VALUE", help="data option, e.g. root=~/data download=true")
    g.add_argument("--strategy", choices=strategies, metavar="NAME",
                   help=f"search strategy ({', '.join(strategies)}); default evolution")
    g.add_argument("--strategy-opt", action="append", type=parse_kv("--strategy-opt"),
                   default=[], metavar="KEY=VALUE", help="strategy option, e.g. population=8")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", metavar="DEVICE",
                   help="where trials train: auto (default: CUDA when present), cpu, cuda, "
                        "cuda:N or mps")
    e = p.add_argument_group("evaluation")
    e.add_argument("--estimator", choices=ESTIMATORS,
                   help="training (torch on digits), nb201 (table), oneshot, shared (an "
                        "ENAS run's shared weights; what --strategy enas selects)")
    e.add_argument("--estimator-opt", action="append", type=parse_kv("--estimator-opt"),
                   default=[], metavar="KEY=VALUE", help="estimator option, e.g. epochs=3")
    e.add_argument("--evaluator", metavar="FUNCTION",
                   help="your objective: module:function or file.py:function taking a trial "
                        "and returning metrics (replaces the training estimator)")
    e.add_argument("--evaluator-opt", action="append", type=parse_kv("--evaluator-opt"),
                   default=[], metavar="KEY=VALUE", help="option handed to it (trial.options)")
    e.add_argument("--latency", choices=("auto", "on", "off"),
                   help="measure TVM latency (auto: when the reward/objectives need it)")
    e.add_argument("--latency-policy", choices=LATENCY_POLICIES,
                   help="which latency trials carry: measure (every network compiled and "
                        "measured), predict (per-layer table), auto (default: predicted, "
                        "measured for the Pareto front, the top-k and a calibration share)")
    e.add_argument("--latency-paths", type=_latency_paths, metavar="auto|PATH[,PATH]",
                   help="deployment paths a measured latency is the fastest of: tvm, "
                        "onnxruntime, eager (default auto: tvm,onnxruntime on a host target, "
                        "tvm elsewhere)")
    e.add_argument("--latency-settle", type=seconds, metavar="SECONDS",
                   help="on this CPU, time a latency only while the machine runs at full "
                        "speed, waiting up to SECONDS for it (default 10; 0: at once)")
    e.add_argument("--reward", choices=REWARDS,
                   help="auto (default: mnasnet for accuracy vs latency_ms, else the first "
                        "objective in its direction), mnasnet, accuracy or objective")
    e.add_argument("--latency-target", type=positive_float, metavar="MS",
                   help="the MnasNet reward's target T (ms; default 0.5)")
    e.add_argument("--objective", action="append", type=_objective, default=[],
                   metavar="METRIC:max|min",
                   help="objective for the Pareto front (repeat; default accuracy:max "
                        "latency_ms:min)")
    e.add_argument("--constraint", action="append", type=_constraint, default=[],
                   metavar="METRIC<=N", help="hard bound, e.g. params<=50000 (repeat)")
    e.add_argument("--target", choices=TARGET_KINDS, help="where latency is measured")
    e.add_argument("--target-spec", metavar="TARGET",
                   help="TVM target: registry name, JSON dict or 'llvm -mcpu=...'")
    e.add_argument("--rpc", metavar="HOST:PORT", help="RPC tracker for --target rpc")
    e.add_argument("--rpc-key", metavar="KEY", help="device key at the RPC tracker")
    b = p.add_argument_group("budget and execution")
    b.add_argument("--trials", type=positive_int,
                   help="number of trials (default 32; giving it drops the default time limit)")
    b.add_argument("--epochs", type=positive_int, metavar="N",
                   help="epochs each trial trains (training and oneshot estimators); with "
                        "--preset, the preset's epoch settings (one-shot searches included) "
                        "scaled so that its first is N")
    b.add_argument("--wall-time", type=positive_float, metavar="SECONDS",
                   help="stop proposing after this long (default 200)")
    b.add_argument("--executor", choices=EXECUTORS, help="inprocess, pool (default) or ray")
    b.add_argument("--workers", type=positive_int,
                   help="trials at once (default: one per GPU when training on CUDA, else 2)")
    b.add_argument("--address", metavar="ADDR", help="Ray cluster address (with --executor ray)")
    b.add_argument("--cpus-per-trial", type=positive_float, metavar="N")
    b.add_argument("--gpus-per-trial", type=float, metavar="N",
                   help="Ray: GPUs each trial runs on (default 1 on a CUDA run when the "
                        "cluster has GPUs)")
    b.add_argument("--trial-timeout", type=positive_float, metavar="SECONDS",
                   help="fail a trial that runs longer")
    o = p.add_argument_group("output")
    o.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/STAMP-SPACE-...)")
    o.add_argument("--name", help="run name (folder name under the runs root)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--no-report", action="store_true", help="skip writing the report")


def _preset_base(args: argparse.Namespace) -> Any:
    """The experiment ``--preset`` names, scaled by ``--trials`` and ``--epochs``."""
    from nasir.runtime.experiment import ConfigError
    from nasir.runtime.presets import get_preset

    if args.config:
        raise ConfigError("--preset and -c/--config both give a whole experiment",
                          where="--preset", hint="use one; override single settings with "
                                                 "the other options")
    return get_preset(args.preset).experiment(args.trials, args.epochs)


def _preset_overrides(args: argparse.Namespace, exp: Any) -> dict[str, Any]:
    """What a flag replaces wholesale in a preset: a preset's options belong to its own
    strategy and estimator, and its run folder is named after it."""
    over: dict[str, Any] = {}
    if args.strategy and args.strategy != exp.strategy.name:
        over["strategy.options"] = {}
    if (args.estimator and args.estimator != exp.estimator.kind) or args.evaluator:
        over["estimator.options"] = {}
    if not args.name and not args.run_dir:
        over["name"] = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.preset}"
    return over


def _epochs(args: argparse.Namespace, exp: Any) -> dict[str, Any]:
    """``--epochs`` without a preset: the training or one-shot estimator's epochs."""
    from nasir.runtime.experiment import ConfigError

    kind = "evaluator" if args.evaluator else (args.estimator or exp.estimator.kind)
    if kind not in ("training", "oneshot"):
        raise ConfigError(f"--epochs sets the training or oneshot estimator's epochs, but "
                          f"this run's estimator is {kind}", where="--epochs",
                          hint="drop --epochs, or give a one-shot search's epochs with "
                               "--strategy-opt epochs=N")
    return {"estimator.options": {**exp.estimator.options, "epochs": args.epochs}}


def experiment_from_args(args: argparse.Namespace, base: Any = None):
    """The :class:`Experiment` the flags (and ``--config`` or ``--preset``) describe."""
    from nasir.runtime.experiment import Experiment, load_experiment

    preset = getattr(args, "preset", None)
    if preset:
        base = _preset_base(args)
    exp = load_experiment(args.config) if args.config else (base or Experiment())
    over: dict[str, Any] = {
        "name": args.name, "space.name": args.space, "strategy.name": args.strategy,
        "data.name": args.data, "evaluator.function": args.evaluator,
        "seed": args.seed, "device": args.device, "estimator.kind": args.estimator,
        "estimator.latency": args.latency,
        "latency.policy": getattr(args, "latency_policy", None),
        "latency.paths": getattr(args, "latency_paths", None),
        "latency.settle_s": getattr(args, "latency_settle", None),
        "reward.kind": args.reward, "reward.target": args.latency_target,
        "target.kind": args.target, "target.spec": args.target_spec, "target.rpc_key":
        args.rpc_key, "budget.trials": args.trials, "budget.wall_time_s": args.wall_time,
        "executor.kind": args.executor, "executor.workers": args.workers,
        "executor.address": args.address, "executor.cpus_per_trial": args.cpus_per_trial,
        "executor.gpus_per_trial": args.gpus_per_trial,
        "executor.trial_timeout_s": args.trial_timeout,
    }
    if args.rpc:
        host, _, port = args.rpc.rpartition(":")
        over["target.rpc_host"] = host
        over["target.rpc_port"] = port
        if not args.target:
            over["target.kind"] = "rpc"
    if args.address and not args.executor:
        over["executor.kind"] = "ray"
    if preset:
        over.update(_preset_overrides(args, exp))
    elif getattr(args, "epochs", None):
        over.update(_epochs(args, exp))
    d = exp.to_dict()
    if args.space and args.space != exp.space.name:
        over["space.options"] = {}
    if args.data and args.data != exp.data.name:
        over["data.options"] = {}
    for flag, key in (("space_opt", "space.options"), ("strategy_opt", "strategy.options"),
                      ("estimator_opt", "estimator.options"), ("data_opt", "data.options"),
                      ("evaluator_opt", "evaluator.options")):
        pairs = getattr(args, flag)
        if pairs:
            section, field = key.split(".")
            opts = dict(over[key] if key in over else d[section][field])
            opts.update(dict(pairs))
            over[key] = opts
    if args.objective:
        over["objectives"] = dict(args.objective)
    if args.constraint:
        over["constraints"] = dict(args.constraint)
    out = exp.merged(over)
    if args.trials and args.wall_time is None and not args.config and not preset:
        out = out.model_copy(update={"budget": out.budget.model_copy(
            update={"wall_time_s": None})})
    return out


def run_experiment(exp, args: argparse.Namespace) -> int:
    """Create the run folder, search with a progress bar, print the front, write the report."""
    from rich.console import Console

    from nasir.runtime.console import ProgressCallback
    from nasir.runtime.driver import default_run_dir, start_run
    from nasir.runtime.preflight import prepare

    base_dir = os.path.dirname(os.path.abspath(args.config)) if args.config else None
    prepared = prepare(exp, base_dir)  # every check before a run folder exists
    exp = prepared.exp
    run_dir = args.run_dir or default_run_dir(exp)
    con = Console(stderr=True)
    workers = exp.executor.workers or "auto"  # unset: one per GPU on CUDA, else 2
    con.print(f"[bold]nasir search[/] space={exp.space.name} strategy={exp.strategy.name} "
              f"estimator={exp.estimator.kind}"
              f"{'+latency@' + exp.target.kind if exp.needs_latency else ''} "
              f"{'data=' + exp.data_name + ' ' if exp.data_name else ''}"
              f"reward={exp.reward_spec()['kind']} trials={exp.budget.trials} "
              f"executor={exp.executor.kind}"
              f"{'' if exp.executor.kind == 'inprocess' else f'x{workers}'} "
              f"→ {run_dir}")
    cb = None if args.no_progress else ProgressCallback(con)
    store, driver = start_run(exp, run_dir, callback=cb, prepared=prepared)
    try:
        summary = driver.run()
    finally:
        store.close()
        if cb is not None:
            cb.close()
    finish(summary, exp, args)
    return 0


def finish(summary, exp, args: argparse.Namespace) -> None:
    """Print the Pareto front and write the report (shared with ``resume``)."""
    print_summary(summary, exp.objectives)
    if not getattr(args, "no_report", False):
        from nasir.runtime.report import write_report

        page = write_report(summary["run"])
        print(f"report: {page}")
    print(f"next: nasir show {summary['run']}  ·  nasir export {summary['run']} --best")


def _run(args: argparse.Namespace) -> int:
    return run_experiment(experiment_from_args(args), args)


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "search", help="run a search experiment (no arguments: the main job)",
        description="Run a neural architecture search. With no arguments: the reduced MnasNet "
                    "space on digits, regularized evolution, MnasNet reward over digits "
                    "accuracy and TVM-measured host latency, 2 local workers.")
    add_experiment_options(p)
    one_line_errors(p)
    p.set_defaults(run=_run)
