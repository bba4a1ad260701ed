"""The numpy side of the fused scorer: what
:meth:`~nasir.strategies.surrogates.kernel.Scorer.score_numpy` precomputes once
(``_NumpyPlan``), its first-layer summation methods (``_first_layer``), and the per-term sum
of the per-candidate Python baseline (``_term_python``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasir.strategies.surrogates.kernel_layout import onehot
from nasir.strategies.surrogates.tables import TermTable

__all__: list[str] = []

_FIRST_LAYER = ("gather", "take", "einsum", "reduceat", "onehot")


@dataclass(frozen=True)
class _NumpyPlan:
    """What :meth:`Scorer.score_numpy` precomputes once: ``strides`` (groups, then latency
    terms, then MACs terms when their layout differs) × decisions, so one BLAS product of
    a chunk's rows gives every address (exact in float64); the address ``bases``; the
    second layer as a block-diagonal ``hidden·members × members`` matrix ``w2``; latency and
    MACs values side by side (``both``) when the two tables share a layout."""

    strides: np.ndarray
    bases: np.ndarray
    w2: np.ndarray
    both: np.ndarray | None

    @staticmethod
    def of(layout: TermTable, latency: TermTable, macs: TermTable, decisions: int,
           w1: np.ndarray, w2: np.ndarray, b2: np.ndarray, hidden: int,
           lval: np.ndarray) -> _NumpyPlan:
        """The plan of a scorer: its group ``layout``, its two tables, its number of
        ``decisions``, its ensemble's weights and its aligned latency values ``lval``."""
        shared = latency.same_layout(macs)
        tables = [layout, latency] + ([] if shared else [macs])
        rows = sum(len(t.base) for t in tables)
        strides = np.zeros((rows, decisions), np.float64)
        at = 0
        for t in tables:
            for k in range(len(t.base)):
                np.add.at(strides[at + k], t.pos[k], t.stride[k])
            at += len(t.base)
        members = len(b2)
        block = np.zeros((w1.shape[1], members), np.float32)
        for e in range(members):
            part = slice(e * hidden, (e + 1) * hidden)
            block[part, e] = w2[part]
        return _NumpyPlan(strides, np.concatenate([t.base for t in tables]).astype(np.intp),
                          block, lval if shared else None)


def _first_layer(method: str, gw1: np.ndarray, rows: np.ndarray, f: np.ndarray,
                 sizes: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """First-layer pre-activations of a chunk (``f``: group addresses, groups × rows; the
    grouped table ``gw1`` holds ``b1`` in the first group's rows; ``sizes``, ``w1`` and
    ``b1`` serve the ``onehot`` method)."""
    if method == "gather":
        h = gw1[f[0]]
        for k in range(1, len(f)):
            h += gw1[f[k]]
        return h
    if method == "take":
        h = np.take(gw1, f[0], axis=0)
        buf = np.empty_like(h)
        for k in range(1, len(f)):
            np.add(h, np.take(gw1, f[k], axis=0, out=buf), out=h)
        return h
    if method == "einsum":
        return np.einsum("grh->rh", gw1[f])
    if method == "reduceat":
        g = len(f)
        return np.add.reduceat(gw1[f.T.ravel()], np.arange(0, f.size, g), axis=0)
    return onehot(rows, sizes) @ w1 + b1



def _term_python(t: TermTable, row: list[int]) -> float:
    s = t.constant
    for k in range(len(t.base)):
        at = int(t.base[k])
        for p, st in zip(t.pos[k].tolist(), t.stride[k].tolist()):
            at += row[p] * st
        s += float(t.values[at])
    return s
