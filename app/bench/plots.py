"""Plots of benchmark searches: best-so-far curves of each strategy (matplotlib, Agg).

The CLI (``nasir bench nb201 --plot``) and ``benchmarks/nb201_strategies.py`` both draw
with it; it lives with the runner so that a benchmark needs nothing from the CLI.
"""

from __future__ import annotations

__all__ = ["plot_curves"]


def plot_curves(results: dict, path: str, optimum: float) -> None:
    """Best-so-far curves (mean with a ±1 std band) of each strategy, PNG via Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in results.items():
        curves = np.stack([r.curve for r in runs])
        x = np.arange(1, curves.shape[1] + 1)
        m, s = curves.mean(0), curves.std(0)
        ax.plot(x, m, label=name)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.axhline(optimum, color="k", ls="--", lw=0.8, label=f"optimum {optimum:.2f}")
    lo = min(float(np.stack([r.curve for r in runs])[:, -1].min())
             for runs in results.values())
    ax.set_ylim(max(lo - 1.5, 80.0), optimum + 0.3)
    ax.set_xlabel("queries (distinct architectures)")
    ax.set_ylabel("best CIFAR-10 test accuracy so far (%)")
    ax.set_title(f"NAS-Bench-201 table, {len(next(iter(results.values())))} seeds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
