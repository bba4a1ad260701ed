"""``nasir resume RUN``: continue a run after a crash, an interrupt or to extend its budget."""

from __future__ import annotations

import argparse

from nasir.commands._runtime_cli import one_line_errors, positive_float, positive_int

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nasir.commands.search import finish
    from nasir.runtime.console import ProgressCallback
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.resume import find_run, resume_run
    from nasir.runtime.store import RunStore

    folder = find_run(args.target, args.root)
    over = {k: v for k, v in (("kind", args.executor), ("workers", args.workers),
                              ("address", args.address)) if v is not None}
    if args.address and not args.executor:
        over["kind"] = "ray"
    con = Console(stderr=True)
    st = RunStore.open(folder)
    try:
        counts, status = st.counts(), st.meta("status")
    finally:
        st.close()
    con.print(f"[bold]nasir resume[/] {folder}: was {status}, "
              f"{counts['done'] + counts['failed'] + counts['infeasible']} trials finished, "
              f"{counts['pending'] + counts['running']} to run again")
    cb = None if args.no_progress else ProgressCallback(con, "resume")
    notes: list[str] = []
    try:
        summary = resume_run(folder, trials=args.trials, wall_time_s=args.wall_time,
                             executor_overrides=over, callback=cb, notes=notes)
    finally:
        if cb is not None:
            cb.close()
        if cb is None:  # the progress display printed them as they came
            for note in notes:
                con.print(f"[yellow]note:[/] {note}")
    st = RunStore.open(folder)
    try:
        exp = Experiment.from_dict(st.config)
    finally:
        st.close()
    finish(summary, exp, args)
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    from nasir.runtime.experiment import EXECUTORS

    p = sub.add_parser("resume", help="continue a run (after a crash, or with a bigger budget)",
                       description="Continue RUN: finished trials are kept, in-flight ones "
                                   "re-run, the strategy rebuilt from its stored history.")
    p.add_argument("target", metavar="RUN",
                   help="run folder, its name under the runs root, or 'latest'")
    p.add_argument("--root", metavar="DIR", help="runs root (default $NASIR_RUNS_DIR or runs)")
    p.add_argument("--trials", type=positive_int, help="new total trial budget")
    p.add_argument("--wall-time", type=positive_float, metavar="SECONDS",
                   help="new total wall-time budget")
    p.add_argument("--executor", choices=EXECUTORS, help="run the rest elsewhere")
    p.add_argument("--workers", type=positive_int, help="trials at once")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip writing the report")
    one_line_errors(p)
    p.set_defaults(run=_run)
