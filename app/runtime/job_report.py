"""The report's search-job section: a one-shot run's supernet search, epoch by epoch.

For every job of the run (:mod:`nasir.runtime.jobs`) the section lists its epochs (loss and
whatever else the records carry: the weight lr, the expected latency) and, when the records
carry architecture probabilities (``probs``: DARTS' α softmax, FBNet's and ProxylessNAS'
gate probabilities), plots their evolution — one panel per decision, one line per option —
into ``<name>_alphas.png``. The job's derived architecture and the trials that evaluated the
derived children close it.

>>> records = [{"step": 0, "loss": 2.0, "probs": {"op": [0.5, 0.5]}},
...            {"step": 1, "loss": 1.5, "probs": {"op": [0.3, 0.7]}}]
>>> alpha_series(records)["op"].tolist()
[[0.5, 0.5], [0.3, 0.7]]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["alpha_series", "job_lines", "plot_alphas"]

#: most decision panels drawn in one figure (a big space shows its first ones)
MAX_PANELS = 24


def alpha_series(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per decision (or per edge of a cell node: ``key[e]``), an ``epochs × options`` array
    of the probabilities the records carry."""
    out: dict[str, list[Any]] = {}
    for r in records:
        for k, p in dict(r.get("probs") or {}).items():
            arr = np.asarray(p, dtype=np.float64)
            if arr.ndim == 1:
                out.setdefault(k, []).append(arr)
            elif arr.ndim == 2:
                for e, row in enumerate(arr):
                    out.setdefault(f"{k}[{e}]", []).append(row)
    return {k: np.stack(v) for k, v in out.items() if len({len(x) for x in v}) == 1}


def plot_alphas(records: Sequence[Mapping[str, Any]], out_dir: str, stem: str,
                options: Mapping[str, Sequence[Any]] | None = None) -> str | None:
    """Plot the probabilities' evolution (one panel per decision); the PNG path or
    ``None`` when the records carry none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = alpha_series(records)
    if not series:
        return None
    keys = list(series)[:MAX_PANELS]
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    # each panel its own y range: a short search (DARTS' α lr 3e-4) moves the
    # probabilities by thousandths, which a shared 0–1 axis would hide
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False,
                             sharex=True)
    for ax, k in zip(axes.flat, keys):
        arr = series[k]
        names = list((options or {}).get(k, range(arr.shape[1])))
        for i in range(arr.shape[1]):
            ax.plot(range(len(arr)), arr[:, i], "-o", ms=2.5, lw=1.2,
                    label=str(names[i]) if i < len(names) else str(i))
        ax.set_title(k, fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.supxlabel("epoch")
    fig.supylabel("probability")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{stem}_alphas.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def job_lines(steps: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
              trials: Sequence[Mapping[str, Any]], out_dir: str,
              space: Any = None) -> list[str]:
    """Markdown lines of the search-job section (nothing when the run ran no job)."""
    names = list(dict.fromkeys(str(r["name"]) for r in steps))
    if not names:
        return []
    results = {str(e["name"]): e.get("result") or {} for e in events
               if e.get("event") == "job"}
    options = {d.label: d.options for d in space.decisions} if space is not None else {}
    lines = ["", "## Search job" + ("s" if len(names) > 1 else ""), ""]
    for name in names:
        records = [dict(r["record"]) for r in steps if r["name"] == name]
        done = name in results
        lines += [f"### job `{name}`: {len(records)} epochs"
                  + ("" if done else " (unfinished)"), ""]
        cols = [k for k in dict.fromkeys(k for r in records for k in r)
                if k not in ("step", "epoch", "probs", "derived")
                and all(isinstance(r.get(k), int | float | None) for r in records)]
        lines += ["| epoch | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {r['step']} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |"
                  for r in records]
        png = plot_alphas(records, out_dir, name, options)
        if png is not None:
            lines += ["", f"![architecture weights per epoch]({os.path.basename(png)})"]
        derived = results.get(name, {}).get("assignment")
        if derived:
            lines += ["", "derived architecture: `"
                      + ", ".join(f"{k}={v}" for k, v in derived.items()) + "`"]
            evaluated = [t for t in trials if t["status"] in ("done", "failed", "infeasible")]
            lines += [f"- trial {t['id']}: {t['status']}, reward {_fmt(t.get('reward'))}"
                      + (" (the derived child)" if t["assignment"] == derived else "")
                      for t in evaluated[:10]]
        lines.append("")
    return lines
