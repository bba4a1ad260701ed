"""``nasir demo``: the main job on built-in defaults (what ``make demo`` runs).

A hardware-aware search in a few minutes on a laptop: the reduced MnasNet space on the 8×8
digits images (``tiny_mnasnet``), regularized evolution, the MnasNet reward over digits
validation accuracy and host latency (TVM and ONNX Runtime), two local worker processes. It shows a
progress bar (trials, best reward, ETA), prints the Pareto front and writes a report into
the run folder. Every option of ``nasir search`` works here too.
"""

from __future__ import annotations

__all__ = ["add_parser"]


def _run(args) -> int:
    from nasir.commands.search import experiment_from_args, run_experiment

    return run_experiment(experiment_from_args(args), args)


def add_parser(sub) -> None:
    """Register the subcommand."""
    from nasir.commands._runtime_cli import one_line_errors
    from nasir.commands.search import add_experiment_options

    p = sub.add_parser("demo", help="run the main job: a hardware-aware search on digits",
                       description="Run nasir's main job: tiny_mnasnet on digits, regularized "
                                   "evolution, MnasNet reward (accuracy x TVM host latency), "
                                   "2 workers, about 200 s of search, then the Pareto front "
                                   "and a report. Takes the options of `nasir search`.")
    add_experiment_options(p)
    one_line_errors(p)
    p.set_defaults(run=_run)
