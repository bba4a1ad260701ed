"""``nasir export RUN --best``: the found architecture as JSON IR, plain PyTorch + weights,
ONNX (checked with onnxruntime) and a TVM-compiled library."""

from __future__ import annotations

import argparse
import json

from nasir.commands._runtime_cli import one_line_errors, positive_int

__all__ = ["add_parser"]


def _formats(text: str) -> tuple[str, ...]:
    from nasir.runtime.export import FORMATS

    out = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown format {bad[0] if bad else text!r} "
                                         f"(valid values: {', '.join(FORMATS)})")
    return out


def _run(args: argparse.Namespace) -> int:
    from nasir.runtime.export import FORMATS, export_run
    from nasir.runtime.resume import find_run

    folder = find_run(args.target, args.root)
    man = export_run(folder, args.out, None if args.best else args.trial,
                     args.format or FORMATS, args.tvm_target, tuning=args.tuning,
                     tuning_db=args.tuning_db, trials_per_workload=args.trials_per_workload)
    if args.json:
        print(json.dumps(man, indent=1, default=str))
        return 0
    out = args.out or f"{folder}/export/trial-{man['trial']}"
    print(f"exported trial {man['trial']} (hash {man['hash'][:12]}) to {out}/")
    for k in ("files", "weights", "torch_max_abs_diff", "onnx_max_abs_diff", "files_onnx",
              "onnx", "files_tvm", "tvm_target", "tvm_tuning", "tvm_max_abs_diff", "tvm"):
        if k in man:
            print(f"  {k:>18}: {man[k]}")
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("export", help="export a run's best (or any) architecture",
                       description="Write arch.json (nasir IR), model.py (plain PyTorch, no "
                                   "nasir import) + weights.pt, model.onnx (checked with "
                                   "onnxruntime) and the TVM library for the run's target.")
    p.add_argument("target", metavar="RUN",
                   help="run folder, its name under the runs root, or 'latest'")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the trial with the best reward "
                       "(the default)")
    which.add_argument("--trial", type=positive_int, metavar="ID", help="a given trial")
    p.add_argument("--format", type=_formats, metavar="LIST",
                   help="comma-separated subset of json,torch,onnx,tvm (default all)")
    p.add_argument("--target", dest="tvm_target", metavar="TARGET",
                   help="TVM target (default: the run's)")
    p.add_argument("--tuning", choices=("auto", "db", "none"), default="auto",
                   help="how the TVM library is scheduled: auto (default) = from the target's "
                        "MetaSchedule tuning database when the run measured tuned latency or "
                        "the database has records, db = always from it, none = untuned")
    p.add_argument("--tuning-db", metavar="DIR", help="tuning database folder (default "
                   "$NASIR_CACHE_DIR/tuning)")
    p.add_argument("--trials-per-workload", type=int, default=0, metavar="N",
                   help="tune workloads the database lacks with N candidates each "
                        "(default 0: they keep TVM's default schedule)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/export/trial-ID)")
    p.add_argument("--root", metavar="DIR", help="runs root (default $NASIR_RUNS_DIR or runs)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    one_line_errors(p)
    p.set_defaults(run=_run)
