"""``nasir presets [NAME...]``: the paper presets ``nasir search --preset NAME`` runs.

A table (space, strategy, estimator, the paper's budget, how many deviations), ``--json``
for every preset's paper, settings, scaling and deviations, ``--markdown`` for the table of
``docs/papers.md``.

>>> from nasir.cli import main
>>> main(["presets", "--json", "darts"]) == 0  # doctest: +ELLIPSIS
[...]
True
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from nasir.runtime.presets import all_presets, get_preset, papers_table

    presets = [get_preset(n) for n in args.names] if args.names else all_presets()
    if args.markdown:
        print(papers_table(), end="")
        return 0
    if args.json:
        print(json.dumps([p.to_json() for p in presets], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="nasir paper presets (nasir search --preset NAME)")
    t.add_column("preset", no_wrap=True)
    for col in ("system", "space", "strategy", "estimator", "paper budget", "deviations"):
        t.add_column(col)
    for p in presets:
        mode = " (paper mode)" if p.space_options.get("paper") else ""
        t.add_row(p.name, p.system, p.space + mode, p.strategy,
                  p.estimator, f"{p.budget:,}", str(len(p.deviations)))
    Console().print(t)
    print("settings and deviations: nasir presets --json · run one: nasir search --preset "
          "NAME --trials N --epochs E")
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    from nasir.commands._runtime_cli import one_line_errors

    p = sub.add_parser("presets", help="list the paper presets of nasir search --preset",
                       description="List the paper presets: each seed system's space, "
                                   "strategy, estimator and reward with the paper's "
                                   "settings, its budget and what nasir does differently.")
    p.add_argument("names", nargs="*", metavar="NAME", help="presets to show (default: all)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="paper, settings, scaling and deviations of each preset")
    out.add_argument("--markdown", action="store_true",
                     help="the table of docs/papers.md (every preset)")
    one_line_errors(p)
    p.set_defaults(run=_run)
