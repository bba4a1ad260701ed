"""``nasir latency-table``: build an experiment's per-layer latency table apart from any run.

The ``auto`` and ``predict`` latency policies answer trials from a per-layer table shared by
every run of a space and target (``latency.table``, default
``$NASIR_CACHE_DIR/latency_lut.sqlite``). A table built once, before the runs (the way
FBNet builds its lookup table), lets a run answer its trials at once instead of compiling
new layers while it trains; this command builds it: the layers of the trials earlier runs
deferred (``latency.budget``), the space's references and ``--candidates`` random ones.
It takes the same experiment options as ``nasir search`` (the space, target, ``[latency]``
settings — with ``tuned = true`` layers compile from the tuning database).

    nasir latency-table --candidates 100                 # the main job's space and target
    nasir latency-table -c exp.toml --candidates 200 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nasir.commands._runtime_cli import int_at_least, one_line_errors
from nasir.commands.search import add_experiment_options, experiment_from_args

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from nasir.runtime.latency_table import build_table, table_path
    from nasir.runtime.preflight import prepare

    exp = experiment_from_args(args)
    prepared = prepare(exp, smoke=False)  # every check a run makes, before anything is built
    exp = prepared.exp

    def progress(line: str) -> None:
        if not args.json:
            print(f"  {line}", file=sys.stderr, flush=True)

    out: dict[str, Any] = build_table(exp, prepared.space, candidates=args.candidates,
                                      seed=exp.seed, progress=progress)
    out["table"] = table_path(exp)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"latency table {out['table']}: {out['layers_before']} → {out['layers']} layers "
              f"({out['measured']} measured, {out['deferred_done']} deferred trials done, "
              f"{out['deferred_invalid']} no longer valid) in {out['seconds']} s")
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "latency-table", help="build the per-layer latency table of a space apart from runs",
        description="Measure the layers of the space's references, of N random candidates and "
                    "of the trials earlier runs deferred into the experiment's latency table "
                    "(latency.table), which the auto and predict policies answer from.")
    add_experiment_options(p)
    p.add_argument("--candidates", type=int_at_least(0), default=50, metavar="N",
                   help="random candidates whose layers to measure (default 50; 0: only the "
                        "references and deferred trials)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    one_line_errors(p)
    p.set_defaults(run=_run)
