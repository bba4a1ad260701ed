"""The report's latency section: which latency trials carry, and predicted next to measured.

Under ``latency.policy`` ``predict`` or ``auto`` (:mod:`nasir.runtime.latency_policy`) a trial
carries either its measured or its predicted latency; measured trials keep both. This
section counts them, scores the prediction against the measurements (MAPE, Kendall τ) and
plots predicted against measured (``latency_predicted_vs_measured.png`` / ``.svg``).

>>> ts = [{"status": "done", "metrics": {"latency_source": "measured",
...        "latency_predicted_ms": p, "latency_measured_ms": m}}
...       for p, m in ((1.0, 1.1), (2.0, 1.9), (3.0, 3.3))]
>>> s = prediction_scores(ts)
>>> s["pairs"], round(s["mape"], 1), s["kendall_tau"]
(3, 7.8, 1.0)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from nasir.runtime.figures import save_figure

__all__ = ["latency_lines", "plot_predicted_vs_measured", "prediction_scores"]


def _pairs(trials: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    out = []
    for t in trials:
        m = t.get("metrics") or {}
        p, q = m.get("latency_predicted_ms"), m.get("latency_measured_ms")
        if t.get("status") in ("done", "infeasible") and p is not None and q is not None:
            out.append((float(p), float(q)))
    return out


def prediction_scores(trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``pairs``, ``mape`` (percent) and ``kendall_tau`` of predicted vs measured latency
    over the trials that carry both (``None`` where too few)."""
    pairs = _pairs(trials)
    if not pairs:
        return {"pairs": 0, "mape": None, "kendall_tau": None}
    mape = 100.0 * sum(abs(p - m) / m for p, m in pairs if m > 0) / len(pairs)
    tau = None
    if len(pairs) >= 3:
        from scipy.stats import kendalltau

        v = float(kendalltau([p for p, _ in pairs], [m for _, m in pairs]).statistic)
        tau = v if math.isfinite(v) else None
    return {"pairs": len(pairs), "mape": mape, "kendall_tau": tau}


def plot_predicted_vs_measured(trials: Sequence[Mapping[str, Any]], out_dir: str
                               ) -> list[str]:
    """Scatter of predicted against measured latency with the diagonal (PNG and SVG)."""
    import matplotlib.pyplot as plt

    pairs = _pairs(trials)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    if pairs:
        ax.scatter([m for _, m in pairs], [p for p, _ in pairs], s=16, alpha=0.7,
                   color="tab:blue", label=f"trials measured ({len(pairs)})")
        lo = min(min(p) for p in pairs)
        hi = max(max(p) for p in pairs)
        ax.plot([lo, hi], [lo, hi], "--", color="tab:gray", lw=1, label="predicted = measured")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("latency: table prediction vs measurement")
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "latency_predicted_vs_measured")


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def latency_lines(trials: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                  summary: Mapping[str, Any] | None, out_dir: str) -> list[str]:
    """The Markdown lines of the section (empty when no trial carries a latency source)."""
    done = [t for t in trials if t.get("status") == "done"]
    sources = [(t.get("metrics") or {}).get("latency_source") for t in done]
    if not any(sources):
        return []
    policy = (config.get("latency") or {}).get("policy", "measure")
    n_meas = sum(s == "measured" for s in sources)
    n_pred = sum(s == "predicted" for s in sources)
    lines = ["", "## Latency", "",
             f"policy **{policy}**: {n_meas} trials carry measured latency, {n_pred} "
             "predicted (per-layer table, calibrated)."]
    if summary:
        cal = summary.get("calibration") or {}
        lines += ["", f"{summary.get('measured', 0)} networks measured in "
                  f"{float(summary.get('measure_s') or 0):.1f} s, {summary.get('predicted', 0)} "
                  f"predicted in {float(summary.get('predict_s') or 0):.1f} s "
                  f"({summary.get('new_layers', 0)} layers new to the table); calibration "
                  f"measured ≈ {float(cal.get('slope', 1.0)):.3f} × table + "
                  f"{float(cal.get('intercept', 0.0)):.3f} ms from {cal.get('points', 0)} "
                  f"points, refit {cal.get('refits', 0)} times."]
    lines += path_lines(trials)
    lines += speed_lines(trials)
    lines += tuning_lines(trials, summary)
    s = prediction_scores(trials)
    if s["pairs"]:
        plot_predicted_vs_measured(trials, out_dir)
        lines += ["", f"Predicted vs measured over the {s['pairs']} trials that carry both: "
                  f"MAPE {_num(s['mape'], '.1f')} %, Kendall τ {_num(s['kendall_tau'], '.3f')} "
                  "(the prediction a trial had when it was recorded; the trials measured are "
                  "the promising ones, not a random sample).", "",
                  "![predicted vs measured](latency_predicted_vs_measured.png)"]
    return lines


def path_lines(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which deployment path (``latency.paths``) was the fastest for the measured trials,
    and the median ratio of each path to the fastest. Empty when no trial carries paths.

    >>> print(path_lines([{"metrics": {"latency_path": "onnxruntime",
    ...                    "latency_paths_ms": {"tvm": 2.0, "onnxruntime": 1.0}}},
    ...                   {"metrics": {"latency_path": "tvm",
    ...                    "latency_paths_ms": {"tvm": 1.0, "onnxruntime": 1.5}}}])[1])
    Deployment paths (a measured latency is the fastest of them): onnxruntime fastest for 1, \
tvm for 1 of 2 measured networks; median time over the fastest: onnxruntime 1.25×, tvm 1.5×.
    """
    ms = [m for m in ((t.get("metrics") or {}) for t in trials)
          if m.get("latency_path") and m.get("latency_paths_ms")]
    if not ms:
        return []
    names = sorted({k for m in ms for k in m["latency_paths_ms"]})
    wins = {k: sum(m["latency_path"] == k for m in ms) for k in names}
    ratios = {k: [m["latency_paths_ms"][k] / min(m["latency_paths_ms"].values())
                        for m in ms if m["latency_paths_ms"].get(k)] for k in names}
    won = ", ".join(f"{k} {'fastest for ' if i == 0 else 'for '}{wins[k]}"
                    for i, k in enumerate(sorted(names, key=lambda k: -wins[k])))
    med = ", ".join(f"{k} {statistics.median(v):.3g}×" for k, v in ratios.items() if v)
    return ["", f"Deployment paths (a measured latency is the fastest of them): {won} of "
            f"{len(ms)} measured networks; median time over the fastest: {med}."]


def speed_lines(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """How many measured latencies were timed at the machine's full speed
    (``latency.settle_s``, :mod:`nasir.backends.tvm.machine_speed`): a trial whose
    ``latency_speed`` is under full speed was timed after the wait ran out. Empty when no trial
    carries a speed.

    >>> print(speed_lines([{"metrics": {"latency_speed": 1.0}},
    ...                    {"metrics": {"latency_speed": 0.62}}])[1])
    Machine speed: 1 of 2 measured latencies timed at full speed; the slowest at 0.62 of it \
(latency.settle_s ran out: its latency reads high).
    """
    sp = [float(m["latency_speed"]) for m in ((t.get("metrics") or {}) for t in trials)
          if m.get("latency_speed") is not None]
    if not sp:
        return []
    from nasir.backends.tvm.machine_speed import at_full_speed

    full = sum(at_full_speed(s) for s in sp)
    tail = ("" if full == len(sp) else f"; the slowest at {min(sp):.2f} of it (latency."
            "settle_s ran out: its latency reads high)")
    return ["", f"Machine speed: {full} of {len(sp)} measured latencies timed at full speed"
            f"{tail}."]


def tuning_lines(trials: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None
                 ) -> list[str]:
    """The tuning database's part (``latency.tuned``): how many workloads of the measured
    networks it covered when they were compiled, and what the background tuner did
    (:mod:`nasir.runtime.background_tuning`). Empty when nothing was compiled from it.

    >>> print(tuning_lines([{"metrics": {"latency_tuned_workloads": 3,
    ...                                  "latency_untuned_workloads": 1}}],
    ...                    {"tuning_tuned": 1, "tuning_trials": 2, "tuning_s": 4.0})[1])
    Tuning database: 1 measured networks compiled from it, 3 of their 4 workloads tuned \
(75 %); background tuning: 1 workloads tuned (2 candidates measured) in 4.0 s, 0 queued, \
0 still pending (kept in the database's wanted list for a later run), 0 busy in another \
process, 0 failed.
    """
    ms = [t.get("metrics") or {} for t in trials]
    pairs = [(int(m["latency_tuned_workloads"]), int(m["latency_untuned_workloads"]))
             for m in ms if m.get("latency_tuned_workloads") is not None
             and m.get("latency_untuned_workloads") is not None]
    sm = summary or {}
    if not pairs and not any(k.startswith("tuning_") for k in sm):
        return []
    hit, total = sum(p[0] for p in pairs), sum(p[0] + p[1] for p in pairs)
    rate = f"{100 * hit / total:.0f} %" if total else "n/a"
    loaded = int(sm.get("tuning_wanted_loaded") or 0)
    wanted = f" ({loaded} from the wanted list earlier runs left)" if loaded else ""
    return ["", f"Tuning database: {len(pairs)} measured networks compiled from it, {hit} of "
            f"their {total} workloads tuned ({rate}); background tuning: "
            f"{sm.get('tuning_tuned', 0)} workloads tuned ({sm.get('tuning_trials', 0)} "
            f"candidates measured) in {float(sm.get('tuning_s') or 0):.1f} s, "
            f"{sm.get('tuning_queued', 0)} queued{wanted}, {sm.get('tuning_pending', 0)} still "
            f"pending (kept in the database's wanted list for a later run), "
            f"{sm.get('tuning_busy', 0)} busy in another process, "
            f"{sm.get('tuning_failed', 0)} failed."]
