"""Run reports: best-so-far curve, objective scatter with the Pareto front, the best
architecture drawn as a graph (PNG and SVG, matplotlib Agg), tied together by a Markdown
and an HTML page in ``RUN/report/``.

>>> import tempfile, os
>>> from nasir.runtime.driver import run_search
>>> from nasir.runtime.experiment import Experiment
>>> exp = Experiment.from_dict({"space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
...     "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
...     "objectives": {"accuracy": "max", "params": "min"},
...     "executor": {"kind": "inprocess"}, "budget": {"trials": 6}})
>>> d = tempfile.mkdtemp()
>>> _ = run_search(exp, d)
>>> page = write_report(d)
>>> sorted(f for f in os.listdir(os.path.join(d, "report")) if f.endswith(".png"))
['best_arch.png', 'best_so_far.png', 'pareto.png']
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from nasir.runtime.figures import save_figure
from nasir.runtime.latency_report import latency_lines
from nasir.runtime.results import _val, best_so_far, pareto_trials
from nasir.runtime.store import RunStore

__all__ = ["plot_best_arch", "plot_best_so_far", "plot_pareto", "write_report"]

_KEY_ATTRS = ("out_channels", "out_features", "kernel", "stride", "expand", "se_ratio", "skip")


#: most points drawn in one scatter (a 100,000-trial run plots an even sample; the best-so-far
#: curve and the Pareto front are always drawn in full)
MAX_SCATTER = 4000


def _thin(items: list) -> list:
    """An evenly spaced sample of at most ``MAX_SCATTER`` items (all of them if fewer)."""
    if len(items) <= MAX_SCATTER:
        return items
    step = len(items) / MAX_SCATTER
    return [items[int(k * step)] for k in range(MAX_SCATTER)]


def _of(shown: list, all_: list) -> str:
    return "" if len(shown) == len(all_) else f" ({len(shown):,} of {len(all_):,} shown)"


def plot_best_so_far(trials: Sequence[Mapping[str, Any]], out_dir: str) -> list[str]:
    """Reward of every finished trial and the best-so-far curve, by trial number."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ids = [t["id"] for t in trials]
    pts: list[tuple[int, float]] = []
    for t in trials:
        v = _val(t, "reward") if t["status"] == "done" else None
        if v is not None:
            pts.append((int(t["id"]), v))
    if pts:
        shown = _thin(pts)
        ax.scatter([p[0] for p in shown], [p[1] for p in shown], s=14, alpha=0.5,
                   color="tab:gray", label="trial reward" + _of(shown, pts))
    curve = best_so_far(trials)
    ax.step(ids, curve, where="post", color="tab:blue", lw=2, label="best so far")
    bad = [t["id"] for t in trials if t["status"] in ("failed", "infeasible")]
    if bad and pts:
        lo = min(p[1] for p in pts)
        bad = _thin(bad)
        ax.scatter(bad, [lo] * len(bad), marker="x", color="tab:red", s=20,
                   label="failed / infeasible")
    ax.set_xlabel("trial")
    ax.set_ylabel("reward")
    ax.set_title("best reward so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, out_dir, "best_so_far")


def plot_pareto(trials: Sequence[Mapping[str, Any]], objectives: Mapping[str, str],
                out_dir: str) -> list[str]:
    """Scatter of the first two objectives with the Pareto front highlighted."""
    keys = list(objectives)[:2]
    if len(keys) < 2:
        keys = [keys[0], "params"]
    objs = {k: objectives.get(k, "min") for k in keys}
    xk, yk = keys[1], keys[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts: list[tuple[float, float]] = []
    for t in trials:
        x, y = _val(t, xk), _val(t, yk)
        if t["status"] == "done" and x is not None and y is not None:
            pts.append((x, y))
    shown = _thin(pts)
    ax.scatter([p[0] for p in shown], [p[1] for p in shown], s=16, alpha=0.5,
               color="tab:gray", label="trials" + _of(shown, pts))
    front = pareto_trials(trials, objs)
    fx = [_val(t, xk) or 0.0 for t in front]
    fy = [_val(t, yk) or 0.0 for t in front]
    order = sorted(range(len(front)), key=lambda i: fx[i])
    ax.plot([fx[i] for i in order], [fy[i] for i in order], "-o", color="tab:orange", lw=2,
            ms=6, label="Pareto front", drawstyle="steps-post")
    for t, x, y in zip(front, fx, fy):
        ax.annotate(f"#{t['id']}", (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel(f"{xk} ({objs[xk]})")
    ax.set_ylabel(f"{yk} ({objs[yk]})")
    if xk in ("macs", "params") and pts and min(p[0] for p in pts) > 0:
        ax.set_xscale("log")
    ax.set_title(f"{yk} vs {xk}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, out_dir, "pareto")


def _label(n: Any) -> str:
    attrs = n.op.attrs() if hasattr(n.op, "attrs") else {}
    parts = [n.op.name]
    for k in _KEY_ATTRS:
        v = attrs.get(k)
        if v is None or v is False or v == 0.0 or (k == "stride" and v in (1, (1, 1))):
            continue
        short = {"out_channels": "c", "out_features": "f", "kernel": "k", "stride": "s",
                 "expand": "e", "se_ratio": "se", "skip": "skip"}[k]
        parts.append(short if v is True else f"{short}{v if not isinstance(v, tuple) else v[0]}")
    return "\n".join([parts[0], " ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def plot_best_arch(space: Any, assignment: Mapping[str, Any], out_dir: str,
                   title: str = "best architecture") -> list[str]:
    """The architecture's graph (composite ops as single boxes), layered by depth with
    :func:`networkx.multipartite_layout`; edges that skip layers are drawn as arcs."""
    import networkx as nx

    g = space.instantiate(assignment)
    G = nx.DiGraph()
    depth: dict[Any, int] = {}
    for n in g.nodes():
        depth[n] = 1 + max((depth[i] for i in n.inputs), default=-1)
        G.add_node(n.name, layer=depth[n], label=_label(n), op=n.op.name)
        for i in n.inputs:
            G.add_edge(i.name, n.name)
    raw = nx.multipartite_layout(G, subset_key="layer", align="horizontal", scale=1.0)
    layers = max(depth.values()) + 1
    width = max(1, max(sum(1 for d in depth.values() if d == k) for k in range(layers)))
    pos = {k: (float(x) * width * 3.2, -float(G.nodes[k]["layer"])) for k, (x, _) in raw.items()}
    fig, ax = plt.subplots(figsize=(2.2 + 2.8 * width, 0.62 * layers + 0.8))
    for u, v in G.edges:
        span = G.nodes[v]["layer"] - G.nodes[u]["layer"]
        ax.annotate("", xy=pos[v], xytext=pos[u],
                    arrowprops={"arrowstyle": "-|>", "color": "#777", "lw": 0.8,
                                "shrinkA": 9, "shrinkB": 9,
                                "connectionstyle": f"arc3,rad={0.35 if span > 1 else 0.0}"})
    for k, (x, y) in pos.items():
        op = G.nodes[k]["op"]
        color = "#c6dbef" if "conv" in op or op == "linear" else "#fdd0a2"
        ax.text(x, y, G.nodes[k]["label"].replace("\n", "  "), ha="center", va="center",
                fontsize=7, bbox={"boxstyle": "round,pad=0.3", "fc": color, "ec": "#555",
                                  "lw": 0.6})
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.6)
    ax.set_ylim(-layers + 0.4, 0.6)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return save_figure(fig, out_dir, "best_arch")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else (f"{v:.4g}" if abs(v) >= 10 else f"{v:.4f}")
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def write_report(folder: str, out_dir: str | None = None) -> str:
    """Write the plots and ``report.md`` / ``report.html``; returns the Markdown path."""
    from nasir.runtime.worker import build_space

    st = RunStore.open(folder)
    try:
        cfg, trials, counts, best = st.config, st.trials(), st.counts(), st.best()
        status, elapsed = st.meta("status"), float(st.meta("elapsed_s", 0.0) or 0.0)
        latency_summary = st.meta("latency.summary")
        job_steps, events = st.job_steps(), st.events()
    finally:
        st.close()
    out = out_dir or os.path.join(folder, "report")
    os.makedirs(out, exist_ok=True)
    objectives = cfg.get("objectives") or {"accuracy": "max"}
    plot_best_so_far(trials, out)
    plot_pareto(trials, objectives, out)
    if best is not None:
        plot_best_arch(build_space(cfg, folder), best["assignment"], out,
                       f"best architecture (trial {best['id']}, reward {best['reward']:.4f})")
    front = pareto_trials(trials, objectives)
    keys = [*objectives, "reward"] + (["params"] if "params" not in objectives else [])
    if any("latency_predicted_ms" in t["metrics"] for t in front):  # which latency, both
        keys += ["latency_source", "latency_predicted_ms", "latency_measured_ms"]
    lines = [f"# nasir run `{os.path.basename(os.path.normpath(folder))}`", "",
             f"space **{cfg['space']['name']}**, strategy **{cfg['strategy']['name']}**, "
             f"estimator **{cfg['estimator']['kind']}**, reward **{cfg['reward']['kind']}**, "
             f"seed {cfg.get('seed')}; status {status}; {counts['done']} done, "
             f"{counts['failed']} failed, {counts['infeasible']} infeasible in {elapsed:.0f} s.",
             "", "![best so far](best_so_far.png)", "", "![pareto](pareto.png)", ""]
    if best is not None:
        lines += ["## Best trial", "", f"trial {best['id']}, reward {_fmt(best['reward'])}, "
                  + ", ".join(f"{k} {_fmt(best['metrics'].get(k))}" for k in objectives), "",
                  "`" + ", ".join(f"{k}={v}" for k, v in best["assignment"].items()) + "`", "",
                  "![best architecture](best_arch.png)", ""]
    lines += ["## Pareto front", "", "| trial | " + " | ".join(keys) + " |",
              "|---|" + "---|" * len(keys)]
    for t in front:
        vals = [t.get("reward") if k == "reward" else t["metrics"].get(k) for k in keys]
        lines.append(f"| {t['id']} | " + " | ".join(_fmt(v) for v in vals) + " |")
    lines += latency_lines(trials, cfg, latency_summary, out)
    if job_steps:  # a one-shot run: its supernet search, epoch by epoch
        from nasir.runtime.job_report import job_lines

        lines += job_lines(job_steps, events, trials, out, build_space(cfg, folder))
    lines += _test_lines(folder)
    failed = [t for t in trials if t["status"] == "failed"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- trial {t['id']}: {t['error']}" for t in failed[:20]]
    md = "\n".join(lines) + "\n"
    md_path = os.path.join(out, "report.md")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(md)
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as fh:
        fh.write(_html(md))
    return md_path


def _test_lines(folder: str) -> list[str]:
    """The test-split section: the best trials' kept weights scored once on the test split."""
    from nasir.errors import NasirError
    from nasir.runtime.final_test import final_test_scores

    try:
        scores = final_test_scores(folder)
    except (NasirError, OSError, RuntimeError) as e:
        return ["", "## Test split", "", f"not scored: {str(e).splitlines()[0]}"]
    if not scores:
        return []
    lines = ["", "## Test split", "",
             "The data set's test split, used only here: the best trial and the Pareto front, "
             "with the weights their trials trained (search scored on the validation split).",
             "", "| trial | test accuracy | images |", "|---|---|---|"]
    lines += [f"| {tid} | {_fmt(s['test_accuracy'])} | {s['test_n']} |"
              for tid, s in sorted(scores.items())]
    return lines


def _html(md: str) -> str:
    """A small, dependency-free rendering of the report's Markdown subset."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if line.startswith("|---"):
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            alt, _, rest = line[2:].partition("](")
            body.append(f'<img alt="{html.escape(alt)}" src="{html.escape(rest[:-1])}">')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            text = html.escape(line).replace("**", "")
            body.append(f"<p>{text.replace('`', '')}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nasir report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
