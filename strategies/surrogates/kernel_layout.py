"""How the fused scorer lays its tables out: decisions grouped so that one pre-summed
first-layer row is gathered per group (:func:`group_decisions`, ``_grouped``), tables that
start on a cache line (``_aligned``), the unsigned twin of each index type (range checks by
one compare), and the one-hot rows the models are trained on (:func:`onehot`).
"""

from __future__ import annotations

import numpy as np

from nasir.strategies.surrogates.tables import TermTable

__all__ = ["group_decisions", "onehot"]

_ALIGN = 64  # tables start on a cache line: 80-float rows then span 5 lines each, not 6
_UNSIGNED = {np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16,
             np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


def _aligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on a ``_ALIGN``-byte boundary."""
    a = np.ascontiguousarray(a)
    buf = np.empty(a.nbytes + _ALIGN, np.uint8)
    at = (-buf.ctypes.data) % _ALIGN
    out = buf[at:at + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def group_decisions(sizes: np.ndarray, cap: int = 256) -> list[list[int]]:
    """Consecutive decisions grouped while the product of their sizes stays ``<= cap``.

    >>> group_decisions(np.array([2, 3, 5, 4]), cap=8)
    [[0, 1], [2], [3]]
    """
    groups: list[list[int]] = []
    prod = cap + 1
    for d, size in enumerate(np.asarray(sizes).tolist()):
        if prod * size > cap or not groups:
            groups.append([d])
            prod = size
        else:
            groups[-1].append(d)
            prod *= size
    return groups


def _grouped(sizes: np.ndarray, offsets: np.ndarray, groups: list[list[int]],
             w1: np.ndarray, b1: np.ndarray,
             rw: np.ndarray) -> tuple[TermTable, np.ndarray, np.ndarray]:
    """Per group, every combination of its decisions' options with the summed first-layer
    rows (and ridge coefficients) of those options: one gather per group at scoring time.

    The first-layer table has ``b1`` added into the first group's rows (every candidate
    reads exactly one of them), one zero row at the end (the kernel's padding), and starts
    on a cache line."""
    terms, rows_w, rows_r = [], [], []
    for k, grp in enumerate(groups):
        shape = tuple(int(sizes[d]) for d in grp)
        combos = np.indices(shape).reshape(len(grp), -1).T
        feats = combos + offsets[grp][None, :]
        rows = w1[feats].sum(1, dtype=np.float32)
        rows_w.append(rows + b1 if k == 0 else rows)
        rows_r.append(rw[feats].sum(1))
        terms.append((grp, np.zeros(shape)))
    layout = TermTable.from_terms(terms)
    rows_w.append(np.zeros((1, w1.shape[1]), np.float32))
    return layout, _aligned(np.concatenate(rows_w).astype(np.float32)), np.concatenate(rows_r)


def onehot(idx: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One-hot float32 rows from option indices (the ``onehot`` encoding's layout).

    >>> onehot(np.array([[1, 0]]), np.array([2, 3])).tolist()
    [[0.0, 1.0, 1.0, 0.0, 0.0]]
    """
    idx = np.asarray(idx, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((len(idx), int(sizes.sum())), dtype=np.float32)
    out[np.arange(len(idx))[:, None], idx + offsets[None, :]] = 1.0
    return out

