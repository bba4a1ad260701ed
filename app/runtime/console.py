"""Terminal output for runs: the live progress bar and the result tables (rich)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["ProgressCallback", "format_metric", "out_console", "pareto_table", "trials_table"]


def out_console() -> Console:
    """A console for tables on stdout: the terminal's width, or 140 columns when piped."""
    con = Console()
    return con if con.is_terminal else Console(width=140)


def format_metric(key: str, v: Any) -> str:
    """A metric for a table cell.

    >>> format_metric("accuracy", 0.91234), format_metric("params", 12345), format_metric("x", None)
    ('0.9123', '12,345', '-')
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if key in ("params", "macs"):
            return f"{v:,.0f}"
        return f"{v:.4g}" if abs(v) >= 10 else f"{v:.4f}"
    return str(v)


class ProgressCallback:
    """A driver callback that shows trials done, best reward and ETA."""

    def __init__(self, console: Console | None = None, label: str = "search") -> None:
        self.console = console or Console(stderr=True)
        self.label = label
        self.progress: Progress | None = None
        self.task: Any = None
        self.failed = 0

    def __call__(self, kind: str, info: Mapping[str, Any]) -> None:
        if kind == "start":
            self.progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("best reward {task.fields[best]}"),
                TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"), console=self.console,
                transient=False)
            self.progress.start()
            desc = self.label + (" (resumed)" if info.get("resumed") else "")
            self.total = int(info["total"])
            self.deadline = info.get("deadline")
            self.started = time.monotonic()
            self.done0 = int(info.get("done", 0))
            self.task = self.progress.add_task(desc, total=self.total, completed=self.done0,
                                               best="-", failed=0, eta="-")
        elif kind == "trial" and self.progress is not None:
            t = info["trial"]
            if t["status"] == "failed":
                self.failed += 1
            best = info.get("best")
            self.progress.update(self.task, completed=info["done"], failed=self.failed,
                                 best=f"{best['reward']:.4f}" if best and best.get("reward")
                                 is not None else "-", eta=self._eta(int(info["done"])))
        elif kind.startswith("job_") and self.progress is not None:
            self._job(kind, info)
        elif kind == "note":
            self.console.print(f"[yellow]note:[/] {info['text']}")
        elif kind == "end":
            self.close()

    def _job(self, kind: str, info: Mapping[str, Any]) -> None:
        """A strategy's search job: its own bar (steps, last loss) under the trials'."""
        assert self.progress is not None
        if kind == "job_start":
            desc = f"job {info['name']}" + (" (resumed)" if info.get("resumed") else "")
            self.job_task = self.progress.add_task(desc, total=int(info["total"]),
                                                   completed=int(info["done"]), best="-",
                                                   failed=0, eta="-")
        elif kind == "job_step" and getattr(self, "job_task", None) is not None:
            loss = info["record"].get("loss")
            self.progress.update(self.job_task, completed=int(info["done"]),
                                 best=f"loss {loss:.4f}" if isinstance(loss, float) else "-")
        elif kind == "job_end" and getattr(self, "job_task", None) is not None:
            self.progress.update(self.job_task, completed=int(info["total"]))

    def _eta(self, done: int) -> str:
        """Remaining time: trials left at the rate so far, capped by the wall-time budget."""
        now = time.monotonic()
        rate = (now - self.started) / max(1, done - self.done0)
        left = (self.total - done) * rate
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - time.time()))
        return time.strftime("%M:%S", time.gmtime(left)) if left < 3600 else f"{left / 3600:.1f}h"

    def close(self) -> None:
        """Stop the live display."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _short(a: Mapping[str, Any], limit: int = 400) -> str:
    """Compact architecture text: labels sharing a ``bN_`` prefix are grouped.

    >>> _short({"b1_op": "dconv", "b1_kernel": 3, "b2_op": "conv", "lr": 1})
    'b1 dconv k3 · b2 conv · lr=1'
    """
    groups: dict[str, list[str]] = {}
    for k, v in a.items():
        m = re.fullmatch(r"(b\d+)_(\w+)", k)
        if m is None:
            groups.setdefault(k, []).append(f"{k}={v}")
            continue
        field = m.group(2)
        short = {"op": "", "kernel": "k", "filters": "f", "layers": "x", "se": "se",
                 "skip": "skip"}.get(field, field + "=")
        if field == "se":
            text = "se" if v else ""
        elif field == "skip":
            text = "skip" if v else ""
        else:
            text = f"{short}{v}"
        groups.setdefault(m.group(1), [m.group(1)])
        if text:
            groups[m.group(1)].append(text)
    out = " · ".join(" ".join(g) for g in groups.values())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def pareto_table(front: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                 title: str = "Pareto front") -> Table:
    """A table of Pareto-optimal trials: id, objectives, reward, params, architecture."""
    t = Table(title=title)
    cols = ["trial", *objectives, "reward"]
    if "params" not in objectives:
        cols.append("params")
    for c in cols:
        t.add_column(c, justify="right")
    t.add_column("architecture", overflow="fold")
    for tr in front:
        m = tr.get("metrics", {})
        row = [str(tr["id"])]
        row += [format_metric(k, tr.get("reward") if k == "reward" else m.get(k))
                for k in cols[1:]]
        row.append(_short(tr["assignment"]))
        t.add_row(*row)
    return t


def trials_table(trials: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                 title: str = "trials") -> Table:
    """A table of trials with status, metrics, reward, worker and error."""
    t = Table(title=title)
    for c in ("trial", "status", *metrics, "reward", "eval s", "worker / error"):
        t.add_column(c, justify="right" if c not in ("status", "worker / error") else "left")
    for tr in trials:
        m = tr.get("metrics", {})
        t.add_row(str(tr["id"]), tr["status"], *[format_metric(k, m.get(k)) for k in metrics],
                  format_metric("reward", tr.get("reward")), format_metric("s", tr.get("eval_s")),
                  (tr.get("error") or tr.get("worker") or "")[:70])
    return t
