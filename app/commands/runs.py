"""``nasir runs``: list runs with their best results; ``show_run`` backs ``nasir show RUN``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from nasir.commands._runtime_cli import one_line_errors

__all__ = ["add_parser", "run_summary", "show_run"]


def run_summary(folder: str) -> dict[str, Any]:
    """One run as a JSON-able dict: config essentials, counts, best trial."""
    from nasir.runtime.store import RunStore

    st = RunStore.open(folder)
    try:
        cfg = st.config
        best = st.best()
        return {
            "run": folder, "name": os.path.basename(os.path.normpath(folder)),
            "created": st.meta("created"), "status": st.meta("status"),
            "elapsed_s": st.meta("elapsed_s", 0.0),
            "space": cfg.get("space", {}).get("name"),
            "strategy": cfg.get("strategy", {}).get("name"),
            "estimator": cfg.get("estimator", {}).get("kind"),
            "budget": cfg.get("budget", {}).get("trials"), "counts": st.counts(),
            "best": None if best is None else {
                "trial": best["id"], "reward": best["reward"], "hash": best["hash"],
                "metrics": best["metrics"], "assignment": best["assignment"]},
        }
    finally:
        st.close()


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nasir.runtime.console import format_metric, out_console
    from nasir.runtime.resume import _list as list_runs
    from nasir.runtime.resume import runs_root

    root = runs_root(args.root)
    rows = [run_summary(f) for f in list_runs(root)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no runs under {root}/ (start one with `nasir search`)")
        return 0
    t = Table(title=f"runs under {root}/")
    t.add_column("run", no_wrap=True)
    for c in ("status", "trials", "reward", "acc", "lat ms"):
        t.add_column(c, justify="left" if c == "status" else "right", no_wrap=True)
    for r in rows:
        c, b = r["counts"], r["best"] or {}
        m = b.get("metrics", {})
        failed = f" ({c['failed']} failed)" if c["failed"] else ""
        t.add_row(r["name"], str(r["status"]),
                  f"{c['done'] + c['failed'] + c['infeasible']}/{r['budget']}{failed}",
                  format_metric("reward", b.get("reward")), format_metric("a", m.get("accuracy")),
                  format_metric("l", m.get("latency_ms")))
    out_console().print(t)
    return 0


def show_run(args: argparse.Namespace) -> int:
    """``nasir show RUN``: config, counts, best trial, Pareto front and the latest trials."""

    from nasir.runtime.console import _short, out_console, pareto_table, trials_table
    from nasir.runtime.results import pareto_trials
    from nasir.runtime.resume import find_run
    from nasir.runtime.store import RunStore

    folder = find_run(args.target, getattr(args, "root", None))
    summary = run_summary(folder)
    st = RunStore.open(folder)
    try:
        objectives = st.config.get("objectives", {"accuracy": "max"})
        keys = [k for k in objectives if k != "reward"]
        light = pareto_trials(st.objective_rows(keys), objectives)
        full = {t["id"]: t for t in st.trials_by_id([t["id"] for t in light])}
        front = [full[t["id"]] for t in light]
        trials = st.last_trials(10)
    finally:
        st.close()
    if getattr(args, "json", False):
        summary["pareto"] = [{"trial": t["id"], "metrics": t["metrics"], "reward": t["reward"],
                              "assignment": t["assignment"]} for t in front]
        print(json.dumps(summary, indent=1))
        return 0
    con = out_console()
    c = summary["counts"]
    con.print(f"[bold]{folder}[/]  status={summary['status']}  space={summary['space']}  "
              f"strategy={summary['strategy']}  estimator={summary['estimator']}  "
              f"elapsed={float(summary['elapsed_s'] or 0):.0f}s")
    con.print("trials: " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    best = summary["best"]
    if best:
        con.print(f"[bold]best[/] trial {best['trial']} reward {best['reward']:.4f} "
                  f"hash {best['hash'][:12]}")
        con.print("  metrics: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best["metrics"].items() if not isinstance(v, list | dict)))
        con.print("  architecture: " + _short(best["assignment"]))
    if front:
        con.print(pareto_table(front, list(objectives)))
    metrics = [k for k in objectives if k != "reward"]
    con.print(trials_table(trials, metrics, title="last 10 trials"))
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("runs", help="list runs and their best results",
                       description="List the runs under the runs root with their best results.")
    p.add_argument("--root", metavar="DIR", help="runs root (default $NASIR_RUNS_DIR or runs)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    one_line_errors(p)
    p.set_defaults(run=_list)
