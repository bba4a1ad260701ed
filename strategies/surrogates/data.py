"""Training data for surrogates from a strategy's results, and the bulk scorer they share.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> a, b, c = (sp.reference(r) for r in ("resnet", "all_skip", "all_conv3x3"))
>>> idx, y = training_set(sp, [(a, 0.9), (b, float("-inf")), (a, 0.7), (c, 0.5)])
>>> idx.shape, y.round(3).tolist()
((3, 6), [0.48, 0.7, 0.5])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.surrogates.kernel import Scorer, onehot
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge
from nasir.strategies.surrogates.tables import TermTable, metric_terms

__all__ = ["bounded_scorer", "sizes_of", "training_set"]


def sizes_of(space: Space) -> np.ndarray:
    """Options per decision, in schema order."""
    return np.array([d.size for d in space.decisions], dtype=np.int64)


def training_set(space: Space, scored: Iterable[tuple[Mapping[str, Any], float]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(option indices, scores)``, one row per distinct assignment (its latest score).

    Failed trials (non-finite scores) get the worst finite score minus a tenth of the
    finite range, so the surrogate learns to avoid them.
    """
    rows: dict[tuple[int, ...], float] = {}
    for a, s in scored:
        key = tuple(space.indices(a))
        rows.pop(key, None)
        rows[key] = float(s)
    idx = np.array(list(rows), dtype=np.int64).reshape(len(rows), len(space.decisions))
    y = np.array(list(rows.values()), dtype=np.float64)
    ok = np.isfinite(y)
    if ok.any() and not ok.all():
        lo, hi = y[ok].min(), y[ok].max()
        y[~ok] = lo - 0.1 * max(hi - lo, 1e-6)
    return idx, y


def bounded_scorer(space: Space, bounds: Mapping[str, float] | None,
                   latency: TermTable | None, idx: np.ndarray | None = None,
                   y: np.ndarray | None = None, model: MLPEnsemble | Ridge | None = None
                   ) -> Scorer:
    """A :class:`Scorer` with ``model`` fitted on ``(idx, y)`` when given, and the tables
    that ``bounds`` (``macs``, ``latency_ms``) need."""
    bounds = dict(bounds or {})
    unknown = set(bounds) - {"macs", "latency_ms"}
    if unknown:
        raise SpecError(f"unknown bound {sorted(unknown)[0]!r}",
                        hint="bounds filter on macs and latency_ms")
    if "latency_ms" in bounds and latency is None:
        raise SpecError("a latency_ms bound needs a latency table",
                        hint="pass latency=lut_terms(space, lut) or a TermTable")
    macs = metric_terms(space, "macs") if "macs" in bounds else None
    sizes = sizes_of(space)
    ens = ridge = None
    if model is not None and idx is not None and y is not None:
        model.fit(onehot(idx, sizes), y)
        ens, ridge = (model, None) if isinstance(model, MLPEnsemble) else (None, model)
    return Scorer(sizes, ens, ridge, latency, macs)
