"""``nasir report RUN``: write the run's plots and report page."""

from __future__ import annotations

import argparse

from nasir.commands._runtime_cli import one_line_errors

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from nasir.runtime.report import write_report
    from nasir.runtime.resume import find_run

    folder = find_run(args.target, args.root)
    page = write_report(folder, args.out)
    print(f"report: {page}")
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("report", help="write a run's plots (PNG/SVG) and report page",
                       description="Write best-so-far, Pareto-front and best-architecture "
                                   "plots plus report.md / report.html for RUN.")
    p.add_argument("target", metavar="RUN",
                   help="run folder, its name under the runs root, or 'latest'")
    p.add_argument("--root", metavar="DIR", help="runs root (default $NASIR_RUNS_DIR or runs)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/report)")
    one_line_errors(p)
    p.set_defaults(run=_run)
