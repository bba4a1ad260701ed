"""Saving the run report's figures: each one as PNG and SVG, then closed (the plots of
:mod:`nasir.runtime.report` and :mod:`nasir.runtime.latency_report` draw with matplotlib's
Agg backend).

>>> import tempfile, matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> fig, ax = plt.subplots()
>>> [p.rsplit(".", 1)[1] for p in save_figure(fig, tempfile.mkdtemp(), "demo")]
['png', 'svg']
>>> plt.fignum_exists(fig.number)
False
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["save_figure"]


def save_figure(fig: Any, out_dir: str, stem: str) -> list[str]:
    """Write ``fig`` to ``<out_dir>/<stem>.png`` and ``.svg`` and close it; the two paths."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "svg"):
        p = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(p, dpi=130, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths
