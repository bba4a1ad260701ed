"""Fused batched scoring of candidates with numba: option indices → predictions + metrics.

One jitted loop takes rows of option indices and, per row and without materialising any
``rows × features`` matrix, computes

* the MLP ensemble's mean and spread: a one-hot row times ``w1`` is the sum of one row of
  ``w1`` per decision (``offsets[d] + idx[d]``), so the encoding and the first layer fuse
  into gathers;
* the ridge prediction (same gathers over its coefficients);
* LUT latency and MACs from two :class:`~nasir.strategies.surrogates.tables.TermTable`.

:meth:`Scorer.score_numpy` is the vectorised numpy version (one-hot matrix, BLAS) and
:meth:`Scorer.score_python` the per-candidate loop; the scoring benchmark checks all three
equal. Compilation is cached on disk (``cache=True``): in ``$NUMBA_CACHE_DIR`` when set,
else under the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``)``/nasir/numba``, so a
fresh clone or a read-only install works and a second process does not recompile.

>>> import numpy as np
>>> from nasir.strategies.surrogates.models import MLPEnsemble, Ridge
>>> sizes = np.array([2, 3])
>>> idx = np.array([[0, 0], [1, 2], [0, 1], [1, 0]])
>>> X = onehot(idx, sizes)
>>> y = np.array([1.0, 4.0, 2.0, 3.0])
>>> sc = Scorer(sizes, MLPEnsemble(members=2, hidden=4, epochs=50).fit(X, y),
...             Ridge(0.1).fit(X, y))
>>> r = sc.score(idx)
>>> bool(np.allclose(r.mean, sc.score_numpy(idx).mean, atol=1e-4))
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from nasir.errors import SpecError
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge
from nasir.strategies.surrogates.tables import TermTable

__all__ = ["Scorer", "Scores", "cache_dir", "group_decisions", "onehot"]


def cache_dir() -> str:
    """Where numba caches compiled kernels (``NUMBA_CACHE_DIR`` wins when set)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return env
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "nasir", "numba")


def _configure_numba() -> None:
    from numba.core import config

    if not getattr(config, "CACHE_DIR", ""):
        path = cache_dir()
        try:
            os.makedirs(path, exist_ok=True)
            setattr(config, "CACHE_DIR", path)  # noqa: B010 - untyped module attribute
        except OSError:  # unwritable home: numba falls back to its own locations
            pass


_configure_numba()

from numba import njit  # noqa: E402  (the cache dir must be set before jitting)

_TILE = 16  # rows per tile: gathers for a tile first, then its dense work


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_features(idx, s, nb, sizes, gpos, gstride, gbase, gridge, rb, feat,
                   out_ridge):  # pragma: no cover - jitted
    """Range check (branch-free per row), group feature indices and the ridge sum."""
    for b in range(nb):
        i = s + b
        bad = False
        for d in range(idx.shape[1]):
            v = idx[i, d]
            bad |= (v < 0) | (v >= sizes[d])
        if bad:
            return i
        r = rb
        for g in range(gbase.shape[0]):
            f = gbase[g]
            for k in range(gpos.shape[1]):
                f += idx[i, gpos[g, k]] * gstride[g, k]
            feat[b, g] = f
            r += gridge[f]
        out_ridge[i] = r
    return -1


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_ensemble(s, nb, feat, n_groups, gw1, b1, w2, b2, hidden, hid, preds, out_mean,
                   out_std):  # pragma: no cover - jitted
    """First-layer sums (contiguous rows of ``gw1``), ReLU-dot per member, mean, spread."""
    width = gw1.shape[1]
    members = b2.shape[0]
    zero = np.float32(0.0)
    inv = np.float32(1.0 / members) if members else zero
    for b in range(nb):
        for j in range(width):
            hid[b, j] = b1[j]
        for g in range(n_groups):
            f = feat[b, g]
            for j in range(width):
                hid[b, j] += gw1[f, j]
    for b in range(nb):
        total = zero
        for e in range(members):
            acc = b2[e]
            at = e * hidden
            for j in range(hidden):
                x = hid[b, at + j]
                acc += (x if x > zero else zero) * w2[at + j]
            preds[e] = acc
            total += acc
        mean = total * inv
        var = zero
        for e in range(members):
            var += (preds[e] - mean) * (preds[e] - mean)
        out_mean[s + b] = mean
        out_std[s + b] = np.sqrt(var * inv)


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _lookup(idx, i, pos, stride, base, values, constant):  # pragma: no cover - jitted
    out = constant
    for t in range(base.shape[0]):
        at = base[t]
        for k in range(pos.shape[1]):
            at += idx[i, pos[t, k]] * stride[t, k]
        out += values[at]
    return out


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_terms(idx, s, nb, lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval,
                mconst, shared, out_lat, out_macs):  # pragma: no cover - jitted
    """Latency and MACs term lookups (one pass over the terms when layouts coincide)."""
    for b in range(nb):
        i = s + b
        if shared:
            lat = lconst
            macs = mconst
            for t in range(lbase.shape[0]):
                at = lbase[t]
                for k in range(lpos.shape[1]):
                    at += idx[i, lpos[t, k]] * lstride[t, k]
                lat += lval[at]
                macs += mval[at]
        else:
            lat = _lookup(idx, i, lpos, lstride, lbase, lval, lconst)
            macs = _lookup(idx, i, mpos, mstride, mbase, mval, mconst)
        out_lat[i] = lat
        out_macs[i] = np.int64(np.floor(macs + 0.5))


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _score_kernel(idx, sizes, gpos, gstride, gbase, gw1, gridge, b1, w2, b2, hidden, rb,
                  lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval, mconst,
                  shared, out_mean, out_std, out_ridge, out_lat, out_macs):  # pragma: no cover
    """Score every row; returns -1, or the first row holding an out-of-range index.

    Rows go in tiles of ``_TILE``: first the tile's range checks, group feature indices
    and ridge sums, then its ensemble outputs, then its latency / MACs lookups. Indices
    are read in place (int16, int32 or int64).
    """
    n = idx.shape[0]
    n_groups = gbase.shape[0]
    hid = np.empty((_TILE, gw1.shape[1]), dtype=np.float32)
    feat = np.empty((_TILE, max(n_groups, 1)), dtype=np.int64)
    preds = np.empty(max(b2.shape[0], 1), dtype=np.float32)
    for s in range(0, n, _TILE):
        nb = min(n, s + _TILE) - s
        bad = _tile_features(idx, s, nb, sizes, gpos, gstride, gbase, gridge, rb, feat,
                             out_ridge)
        if bad >= 0:
            return bad
        _tile_ensemble(s, nb, feat, n_groups, gw1, b1, w2, b2, hidden, hid, preds, out_mean,
                       out_std)
        _tile_terms(idx, s, nb, lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval,
                    mconst, shared, out_lat, out_macs)
    return -1


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
             w1: np.ndarray, rw: np.ndarray) -> tuple[TermTable, np.ndarray, np.ndarray]:
    """Per group, every combination of its decisions' options with the summed first-layer
    rows (and ridge coefficients) of those options: one gather per group at scoring time."""
    terms, rows_w, rows_r = [], [], []
    for grp in groups:
        shape = tuple(int(sizes[d]) for d in grp)
        combos = np.indices(shape).reshape(len(grp), -1).T
        feats = combos + offsets[grp][None, :]
        rows_w.append(w1[feats].sum(1, dtype=np.float32))
        rows_r.append(rw[feats].sum(1))
        terms.append((grp, np.zeros(shape)))
    layout = TermTable.from_terms(terms)
    return layout, np.ascontiguousarray(np.concatenate(rows_w), np.float32), \
        np.concatenate(rows_r)


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


@dataclass(frozen=True)
class Scores:
    """Per-candidate outputs: ensemble ``mean`` / ``std``, ``ridge``, ``latency_ms``, ``macs``."""

    mean: np.ndarray
    std: np.ndarray
    ridge: np.ndarray
    latency_ms: np.ndarray
    macs: np.ndarray

    def allclose(self, other: Scores, atol: float = 1e-3) -> bool:
        """Equal up to float32 summation order (MACs exactly)."""
        return (np.allclose(self.mean, other.mean, rtol=1e-5, atol=atol)
                and np.allclose(self.std, other.std, rtol=1e-4, atol=atol)
                and np.allclose(self.ridge, other.ridge, rtol=1e-9, atol=1e-9)
                and np.allclose(self.latency_ms, other.latency_ms, rtol=1e-12, atol=1e-12)
                and bool(np.array_equal(self.macs, other.macs)))


class Scorer:
    """Scores rows of option indices with a fitted ensemble, a ridge model and two tables.

    ``sizes``: options per decision (schema order). Any of ``ensemble``, ``ridge``,
    ``latency`` and ``macs`` may be ``None`` (its output is then zeros). The kernel gathers
    one pre-summed first-layer row per group of consecutive decisions whose option
    combinations number at most ``group_cap`` (:func:`group_decisions`) instead of one per
    decision: the same sums, fewer adds.
    """

    def __init__(self, sizes: np.ndarray, ensemble: MLPEnsemble | None = None,
                 ridge: Ridge | None = None, latency: TermTable | None = None,
                 macs: TermTable | None = None, group_cap: int = 256) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        f = int(self.sizes.sum())
        if ensemble is not None:
            w = ensemble.weights()
            if w.w1.shape[0] != f:
                raise SpecError(f"the ensemble was trained on {w.w1.shape[0]} features but "
                                f"the one-hot encoding of this space has {f}",
                                hint="fit it on onehot(indices, sizes) of the same space")
            self.w1, self.b1, self.w2, self.b2 = w.w1, w.b1, w.w2, w.b2
            self.hidden = w.hidden
        else:
            self.w1 = np.zeros((f, 0), np.float32)
            self.b1 = self.w2 = np.zeros(0, np.float32)
            self.b2 = np.zeros(0, np.float32)
            self.hidden = 1
        if ridge is not None:
            if ridge.coef is None or len(ridge.coef) != f:
                raise SpecError("the ridge model must be fitted on this space's one-hot rows")
            self.rw, self.rb = np.asarray(ridge.coef, np.float64), float(ridge.intercept)
        else:
            self.rw, self.rb = np.zeros(f), 0.0
        self.latency = latency or TermTable.empty()
        self.macs = macs or TermTable.empty()
        self.groups = group_decisions(self.sizes, group_cap)
        self._layout, self._gw1, self._gridge = _grouped(self.sizes, self.offsets, self.groups,
                                                         self.w1, self.rw)

    def _rows(self, idx: np.ndarray, check: bool = True) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype not in (np.int16, np.int32, np.int64) or not idx.flags.c_contiguous:
            idx = np.ascontiguousarray(idx, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] != len(self.sizes):
            raise SpecError(f"candidates must be (rows, {len(self.sizes)}) option indices, "
                            f"got shape {idx.shape}")
        if check and len(idx) and ((idx < 0).any() or (idx >= self.sizes[None, :]).any()):
            self._out_of_range(int(np.flatnonzero(((idx < 0) | (idx >= self.sizes)).any(1))[0]))
        return idx

    def _out_of_range(self, row: int) -> None:
        raise SpecError(f"an option index is out of range for its decision (row {row})",
                        hint="build rows with space.indices(a)")

    def score(self, idx: np.ndarray) -> Scores:
        """The numba kernel (one core); index ranges are checked inside the kernel."""
        idx = self._rows(idx, check=False)
        n = len(idx)
        out = Scores(np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n),
                     np.empty(n), np.empty(n, np.int64))
        lt, mt = self.latency, self.macs
        g = self._layout
        bad = _score_kernel(idx, self.sizes, g.pos, g.stride, g.base, self._gw1, self._gridge,
                            self.b1, self.w2, self.b2, self.hidden, self.rb,
                            lt.pos, lt.stride, lt.base, lt.values, lt.constant,
                            mt.pos, mt.stride, mt.base, mt.values, mt.constant,
                            lt.same_layout(mt), out.mean, out.std, out.ridge, out.latency_ms,
                            out.macs)
        if bad >= 0:
            self._out_of_range(int(bad))
        return out

    def score_numpy(self, idx: np.ndarray, chunk: int = 65536) -> Scores:
        """Vectorised numpy: one-hot matrix per chunk, BLAS matmuls, gathers for tables."""
        idx = self._rows(idx)
        parts = []
        members = len(self.b2)
        for s in range(0, len(idx), chunk):
            rows = idx[s:s + chunk]
            X = onehot(rows, self.sizes)
            if members:
                a = np.maximum(X @ self.w1 + self.b1, np.float32(0.0)) * self.w2
                preds = a.reshape(len(rows), members, self.hidden).sum(-1) + self.b2
                mean, std = preds.mean(1), preds.std(1)
            else:
                mean = std = np.zeros(len(rows), np.float32)
            parts.append((mean, std, X.astype(np.float64) @ self.rw + self.rb,
                          self.latency.evaluate(rows), self.macs.evaluate(rows)))
        cols = [np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
                for k in range(5)]
        return Scores(cols[0], cols[1], cols[2], cols[3], np.rint(cols[4]).astype(np.int64))

    def score_python(self, idx: np.ndarray) -> Scores:
        """A per-candidate Python loop (the baseline a naive strategy would write)."""
        idx = self._rows(idx)
        members = len(self.b2)
        out: list[tuple[float, float, float, float, float]] = []
        for row in idx.tolist():
            feats = [int(o) + int(off) for o, off in zip(row, self.offsets)]
            h = self.b1 + self.w1[feats].sum(0)
            a = np.maximum(h, np.float32(0.0)) * self.w2
            preds = [float(a[e * self.hidden:(e + 1) * self.hidden].sum() + self.b2[e])
                     for e in range(members)]
            mean = float(np.mean(preds)) if preds else 0.0
            std = float(np.std(preds)) if preds else 0.0
            ridge = self.rb + sum(float(self.rw[f]) for f in feats)
            out.append((mean, std, ridge, _term_python(self.latency, row),
                        _term_python(self.macs, row)))
        arr = np.array(out, dtype=np.float64).reshape(len(out), 5)
        return Scores(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3],
                      np.rint(arr[:, 4]).astype(np.int64))


def _term_python(t: TermTable, row: list[int]) -> float:
    s = t.constant
    for k in range(len(t.base)):
        at = int(t.base[k])
        for p, st in zip(t.pos[k].tolist(), t.stride[k].tolist()):
            at += row[p] * st
        s += float(t.values[at])
    return s
