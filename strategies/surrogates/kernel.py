"""Fused batched scoring of candidates with numba: option indices → predictions + metrics.

One jitted loop takes rows of option indices and, per row and without materialising any
``rows × features`` matrix, computes

* the MLP ensemble's mean and spread: a one-hot row times ``w1`` is the sum of one row of
  ``w1`` per decision (``offsets[d] + idx[d]``), so the encoding and the first layer fuse
  into gathers — of pre-summed rows, one per group of decisions (:func:`group_decisions`),
  with ``b1`` folded in; ReLU and the second layer are fused into the last pass;
* the ridge prediction (same gathers over its coefficients);
* LUT latency and MACs from two :class:`~nasir.strategies.surrogates.tables.TermTable`.

Rows may be int8 … int64 and are read in place: stored in :meth:`Scorer.index_dtype` (int8
for MnasNet) a row is an eighth of its int64 bytes. :meth:`Scorer.score` spreads blocks of
rows over numba's threads (``threads=1``: the calling thread only); outputs do not depend
on the thread count.

:meth:`Scorer.score_numpy` is the vectorised numpy version, written as carefully (same
grouped tables, gathers per chunk, BLAS for addresses and the second layer) and
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

from numba import config as numba_config  # noqa: E402  (the cache dir must be set first)
from numba import (  # noqa: E402
    get_num_threads,
    njit,
    prange,
    set_num_threads,
    set_parallel_chunksize,
)

_TILE = 128  # rows per tile: their indices are transposed to int32 columns first
_BLOCK = 16  # tiles per parallel work item (2,048 rows)
_ALIGN = 64  # tables start on a cache line: 80-float rows then span 5 lines each, not 6
_jit = njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
_UNSIGNED = {np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16,
             np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


@_jit
def _in_range(uflat, s, nb, dims, ubound):  # pragma: no cover - jitted
    """Whether every index of tile rows ``s:s+nb`` is in range: one unsigned compare per
    index in the input's own width (negatives wrap to large values), vectorised."""
    seg = uflat[s * dims:(s + nb) * dims]
    bad = False
    for i in range(seg.shape[0]):
        bad |= seg[i] >= ubound[i]
    return not bad


@_jit
def _columns(idx, s, nb, cols):  # pragma: no cover - jitted
    """Copy a tile's indices into int32 columns, 8 rows at a time (a blocked transpose)."""
    dims = idx.shape[1]
    for b0 in range(0, nb, 8):
        if b0 + 8 <= nb:
            for d in range(dims):
                for k in range(8):
                    cols[d, b0 + k] = np.int32(idx[s + b0 + k, d])
        else:
            for b in range(b0, nb):
                for d in range(dims):
                    cols[d, b] = np.int32(idx[s + b, d])


@_jit
def _addresses(cols, nb, pos, stride, base, out):  # pragma: no cover - jitted
    """``out[t, b]`` = table address of term ``t`` for tile row ``b`` (vectorised over rows;
    padded keys, stride 0, skipped)."""
    for t in range(base.shape[0]):
        o = out[t]
        b0 = np.int32(base[t])
        for b in range(nb):
            o[b] = b0
        for k in range(pos.shape[1]):
            st = np.int32(stride[t, k])
            if st == 0:
                continue
            c = cols[pos[t, k]]
            for b in range(nb):
                o[b] += c[b] * st


@_jit
def _tile_ridge(nb, feat, gridge, rb, ridge):  # pragma: no cover - jitted
    """Ridge sums only (no ensemble members)."""
    for b in range(nb):
        r = rb
        for g in range(feat.shape[0]):
            r += gridge[feat[g, b]]
        ridge[b] = r


@_jit
def _tile_models(nb, feat, gw1, gridge, rb, w2, b2, hidden, mean, std,
                 ridge):  # pragma: no cover - jitted
    """Ridge and ensemble (at least one member), row by row with the row's hidden units
    in L1: the first layer adds 8 group rows per pass (``gw1`` holds ``b1`` in group 0's
    rows and a zero last row that pads the passes; the first pass writes), the last pass
    fused with ReLU × ``w2``; then the member sums, mean and spread. The 8 rows are named
    one by one and the branches spelled out so that every pass is one vectorised loop."""
    members = b2.shape[0]
    width = gw1.shape[1]
    groups = feat.shape[0]
    z = gw1.shape[0] - 1
    zero = np.float32(0.0)
    inv = np.float32(1.0 / max(members, 1))
    last = ((groups - 1) // 8) * 8
    h = np.empty(width, np.float32)
    p = np.empty(max(members, 1), np.float32)
    fs = np.empty(8, np.int64)
    for b in range(nb):
        r = rb
        for g in range(groups):
            r += gridge[feat[g, b]]
        ridge[b] = r
        for g0 in range(0, groups, 8):
            for k in range(8):
                fs[k] = feat[g0 + k, b] if g0 + k < groups else z
            f0 = fs[0]
            f1 = fs[1]
            f2 = fs[2]
            f3 = fs[3]
            f4 = fs[4]
            f5 = fs[5]
            f6 = fs[6]
            f7 = fs[7]
            if g0 == last:
                if g0 == 0:
                    for j in range(width):
                        x = (((gw1[f0, j] + gw1[f1, j]) + (gw1[f2, j] + gw1[f3, j]))
                             + ((gw1[f4, j] + gw1[f5, j]) + (gw1[f6, j] + gw1[f7, j])))
                        h[j] = max(x, zero) * w2[j]
                else:
                    for j in range(width):
                        x = h[j] + (((gw1[f0, j] + gw1[f1, j]) + (gw1[f2, j] + gw1[f3, j]))
                                    + ((gw1[f4, j] + gw1[f5, j]) + (gw1[f6, j] + gw1[f7, j])))
                        h[j] = max(x, zero) * w2[j]
            elif g0 == 0:
                for j in range(width):
                    h[j] = (((gw1[f0, j] + gw1[f1, j]) + (gw1[f2, j] + gw1[f3, j]))
                            + ((gw1[f4, j] + gw1[f5, j]) + (gw1[f6, j] + gw1[f7, j])))
            else:
                for j in range(width):
                    h[j] += (((gw1[f0, j] + gw1[f1, j]) + (gw1[f2, j] + gw1[f3, j]))
                             + ((gw1[f4, j] + gw1[f5, j]) + (gw1[f6, j] + gw1[f7, j])))
        m = zero
        for e in range(members):
            acc = b2[e]
            at = e * hidden
            for j in range(hidden):
                acc += h[at + j]
            p[e] = acc
            m += acc
        m *= inv
        v = zero
        for e in range(members):
            d = p[e] - m
            v += d * d
        mean[b] = m
        std[b] = np.sqrt(v * inv)


@_jit
def _shared_sums(nb, at, lm, lconst, mconst, lat, macs):  # pragma: no cover - jitted
    """Latency and MACs sums when one address per term reads both (``lm``'s two columns),
    four rows at a time so that their add chains overlap."""
    b = 0
    while b + 4 <= nb:
        x0 = x1 = x2 = x3 = lconst
        y0 = y1 = y2 = y3 = mconst
        for t in range(at.shape[0]):
            a0, a1, a2, a3 = at[t, b], at[t, b + 1], at[t, b + 2], at[t, b + 3]
            x0 += lm[a0, 0]
            y0 += lm[a0, 1]
            x1 += lm[a1, 0]
            y1 += lm[a1, 1]
            x2 += lm[a2, 0]
            y2 += lm[a2, 1]
            x3 += lm[a3, 0]
            y3 += lm[a3, 1]
        lat[b], lat[b + 1], lat[b + 2], lat[b + 3] = x0, x1, x2, x3
        macs[b] = np.int64(np.floor(y0 + 0.5))
        macs[b + 1] = np.int64(np.floor(y1 + 0.5))
        macs[b + 2] = np.int64(np.floor(y2 + 0.5))
        macs[b + 3] = np.int64(np.floor(y3 + 0.5))
        b += 4
    for r in range(b, nb):
        x = lconst
        y = mconst
        for t in range(at.shape[0]):
            x += lm[at[t, r], 0]
            y += lm[at[t, r], 1]
        lat[r] = x
        macs[r] = np.int64(np.floor(y + 0.5))


@_jit
def _tile_terms(nb, lat_at, mac_at, lval, mval, shared, lconst, mconst, lat,
                macs):  # pragma: no cover - jitted
    """Latency and MACs sums per row (float64, in term order). ``shared``: one address per
    term reads both values, side by side in ``lval``'s two columns."""
    if shared:
        _shared_sums(nb, lat_at, lval, lconst, mconst, lat, macs)
        return
    for b in range(nb):
        x = lconst
        for t in range(lat_at.shape[0]):
            x += lval[lat_at[t, b], 0]
        y = mconst
        for t in range(mac_at.shape[0]):
            y += mval[mac_at[t, b], 0]
        lat[b] = x
        macs[b] = np.int64(np.floor(y + 0.5))


@_jit
def _tiles(idx, uidx, ubound, t0, t1, gpos, gstride, gbase, gw1, gridge, rb, w2, b2, hidden,
           lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval, mconst, shared,
           out_mean, out_std, out_ridge, out_lat, out_macs):  # pragma: no cover - jitted
    """Score tiles ``t0:t1``; -1, or the first row holding an out-of-range index.

    Per tile: range check, indices to int32 columns, every group and term address for the
    whole tile at once (vectorised over rows), then the models and the term sums row by
    row. Indices are read in place (int8 … int64); addresses fit int32 (checked by the
    caller).
    """
    n, dims = idx.shape
    cols = np.empty((dims, _TILE), np.int32)
    feat = np.empty((gbase.shape[0], _TILE), np.int32)
    lat_at = np.empty((lbase.shape[0], _TILE), np.int32)
    mac_at = np.empty((0 if shared else mbase.shape[0], _TILE), np.int32)
    uflat = uidx.reshape(-1)
    for tile in range(t0, t1):
        s = tile * _TILE
        e = min(n, s + _TILE)
        nb = e - s
        if not _in_range(uflat, s, nb, dims, ubound):
            for b in range(nb):
                for d in range(dims):
                    if uidx[s + b, d] >= ubound[d]:
                        return s + b
        _columns(idx, s, nb, cols)
        _addresses(cols, nb, gpos, gstride, gbase, feat)
        if b2.shape[0]:
            _tile_models(nb, feat, gw1, gridge, rb, w2, b2, hidden, out_mean[s:e],
                         out_std[s:e], out_ridge[s:e])
        else:
            _tile_ridge(nb, feat, gridge, rb, out_ridge[s:e])
            out_mean[s:e] = 0.0
            out_std[s:e] = 0.0
        _addresses(cols, nb, lpos, lstride, lbase, lat_at)
        if not shared:
            _addresses(cols, nb, mpos, mstride, mbase, mac_at)
        _tile_terms(nb, lat_at, mac_at, lval, mval, shared, lconst, mconst, out_lat[s:e],
                    out_macs[s:e])
    return -1


@_jit
def _score_kernel(idx, uidx, ubound, gpos, gstride, gbase, gw1, gridge, rb, w2, b2, hidden,
                  lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval, mconst,
                  shared, out_mean, out_std, out_ridge, out_lat,
                  out_macs):  # pragma: no cover - jitted
    """Every row on the calling thread; -1, or the first row with an out-of-range index."""
    tiles = (idx.shape[0] + _TILE - 1) // _TILE
    return _tiles(idx, uidx, ubound, 0, tiles, gpos, gstride, gbase, gw1, gridge, rb, w2, b2,
                  hidden, lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval,
                  mconst, shared, out_mean, out_std, out_ridge, out_lat, out_macs)


@njit(parallel=True, cache=True, nogil=True, fastmath=True, boundscheck=False,
      error_model="numpy")
def _score_parallel(idx, uidx, ubound, gpos, gstride, gbase, gw1, gridge, rb, w2, b2, hidden,
                    lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval, mconst,
                    shared, out_mean, out_std, out_ridge, out_lat,
                    out_macs):  # pragma: no cover - jitted
    """As :func:`_score_kernel`, blocks of ``_BLOCK`` tiles spread over numba's threads
    (each row's outputs are the same whichever thread computes them)."""
    tiles = (idx.shape[0] + _TILE - 1) // _TILE
    blocks = (tiles + _BLOCK - 1) // _BLOCK
    bad = np.full(blocks, -1, np.int64)
    for k in prange(blocks):
        t0 = k * _BLOCK
        bad[k] = _tiles(idx, uidx, ubound, t0, min(tiles, t0 + _BLOCK), gpos, gstride, gbase,
                        gw1, gridge, rb, w2, b2, hidden, lpos, lstride, lbase, lval, lconst,
                        mpos, mstride, mbase, mval, mconst, shared, out_mean, out_std,
                        out_ridge, out_lat, out_macs)
    for k in range(blocks):
        if bad[k] >= 0:
            return bad[k]
    return -1


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
    def of(sc: Scorer) -> _NumpyPlan:
        shared = sc.latency.same_layout(sc.macs)
        tables = [sc._layout, sc.latency] + ([] if shared else [sc.macs])
        rows = sum(len(t.base) for t in tables)
        strides = np.zeros((rows, len(sc.sizes)), np.float64)
        at = 0
        for t in tables:
            for k in range(len(t.base)):
                np.add.at(strides[at + k], t.pos[k], t.stride[k])
            at += len(t.base)
        members = len(sc.b2)
        w2 = np.zeros((sc.w1.shape[1], members), np.float32)
        for e in range(members):
            part = slice(e * sc.hidden, (e + 1) * sc.hidden)
            w2[part, e] = sc.w2[part]
        return _NumpyPlan(strides, np.concatenate([t.base for t in tables]).astype(np.intp),
                          w2, sc._lval if shared else None)


def _first_layer(method: str, sc: Scorer, rows: np.ndarray, f: np.ndarray) -> np.ndarray:
    """First-layer pre-activations of a chunk (``f``: group addresses, groups × rows; the
    grouped table holds ``b1`` in the first group's rows)."""
    gw1 = sc._gw1
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
    return onehot(rows, sc.sizes) @ sc.w1 + sc.b1


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
                                                         self.w1, self.b1, self.rw)
        self._shared = self.latency.same_layout(self.macs)
        lt, mt = self.latency.values, self.macs.values
        self._lval = _aligned(np.stack([lt, mt], 1) if self._shared else lt[:, None])
        self._mval = self._lval if self._shared else np.ascontiguousarray(mt[:, None])
        self._bounds: dict[np.dtype, np.ndarray] = {}
        self._plan: _NumpyPlan | None = None
        if max(len(self._gw1), len(self.latency.values), len(self.macs.values)) >= 2**31:
            raise SpecError("a scoring table has 2**31 entries or more (the kernel's "
                            "addresses are int32)", hint="lower group_cap or split the terms")

    def _rows(self, idx: np.ndarray, check: bool = True) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype not in _UNSIGNED or not idx.flags.c_contiguous:
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

    def index_dtype(self) -> np.dtype:
        """The narrowest signed integer type that holds every option index of this space:
        rows stored in it are read with fewer bytes (int16 reads a quarter of int64's)."""
        top = int(self.sizes.max()) if len(self.sizes) else 0
        for t in (np.int8, np.int16, np.int32):
            if top <= np.iinfo(t).max + 1:
                return np.dtype(t)
        return np.dtype(np.int64)

    def _unsigned_bounds(self, dtype: np.dtype) -> np.ndarray:
        """Per decision, tiled over a tile's rows: the option count in the unsigned type of
        ``dtype``'s width, capped at ``2**(bits-1)`` so that negatives (which wrap to that
        or more) fail the same one compare as too-large indices."""
        if dtype not in self._bounds:
            cap = np.uint64(2 ** (8 * dtype.itemsize - 1))
            u = np.minimum(self.sizes.astype(np.uint64), cap).astype(_UNSIGNED[dtype])
            self._bounds[dtype] = np.ascontiguousarray(np.tile(u, _TILE))
        return self._bounds[dtype]

    def score(self, idx: np.ndarray, threads: int | None = None) -> Scores:
        """The numba kernel; index ranges are checked inside it.

        ``threads``: how many of numba's threads score the rows (default: numba's current
        count, the cores unless ``NUMBA_NUM_THREADS`` or ``numba.set_num_threads`` says
        otherwise; ``1`` runs on the calling thread only). Small batches always run on one.
        Outputs do not depend on the thread count. Rows may be int8, int16, int32 or int64
        (:meth:`index_dtype` is the narrowest that fits); others are copied to int64.
        """
        idx = self._rows(idx, check=False)
        n = len(idx)
        nthreads = get_num_threads() if threads is None else int(threads)
        most = int(getattr(numba_config, "NUMBA_NUM_THREADS"))  # noqa: B009 - untyped
        if not 1 <= nthreads <= most:
            raise SpecError(f"threads must be 1 to {most}, got {threads!r}",
                            hint="leave it unset for numba's count")
        out = Scores(np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n),
                     np.empty(n), np.empty(n, np.int64))
        lt, mt, g = self.latency, self.macs, self._layout
        args = (idx, idx.view(_UNSIGNED[idx.dtype]), self._unsigned_bounds(idx.dtype),
                g.pos, g.stride, g.base, self._gw1, self._gridge, self.rb, self.w2, self.b2,
                self.hidden, lt.pos, lt.stride, lt.base, self._lval, lt.constant,
                mt.pos, mt.stride, mt.base, self._mval, mt.constant, self._shared,
                out.mean, out.std, out.ridge, out.latency_ms, out.macs)
        if nthreads == 1 or n <= _BLOCK * _TILE:
            bad = _score_kernel(*args)
        else:
            before = get_num_threads()
            set_num_threads(nthreads)
            chunk = set_parallel_chunksize(1)  # blocks handed out one by one, not split
            try:  # evenly up front: on a shared machine a descheduled thread is not waited on
                bad = _score_parallel(*args)
            finally:
                set_parallel_chunksize(chunk)
                set_num_threads(before)
        if bad >= 0:
            self._out_of_range(int(bad))
        return out

    def score_numpy(self, idx: np.ndarray, chunk: int = 1024, first: str = "gather") -> Scores:
        """Vectorised numpy, written as carefully as the kernel: per chunk of rows (kept in
        cache) one unsigned range check, every group and term address from one BLAS
        product of the rows with a stride matrix, the ridge and the first layer gathered
        from the same pre-summed group tables as the kernel, the second layer as one BLAS
        product with a block-diagonal matrix, both tables' values gathered once per term.

        ``first`` picks how the first layer sums its group rows: ``gather`` (one fancy
        index and in-place add per group), ``take`` (``np.take`` into a reused buffer, then
        an in-place add), ``einsum`` or ``reduceat`` over one gather of every group row, or
        ``onehot`` (one-hot matrix times ``w1``, BLAS). The scoring benchmark times each and
        compares the kernel with the fastest. Runs on the calling thread (BLAS may use
        its own threads for the two products).
        """
        if first not in _FIRST_LAYER:
            raise SpecError(f"unknown first-layer method {first!r}",
                            hint=f"use one of {', '.join(_FIRST_LAYER)}")
        idx = self._rows(idx, check=False)
        plan = self._numpy_plan()
        n, groups, members = len(idx), len(self._layout.base), len(self.b2)
        out = Scores(np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n),
                     np.empty(n), np.empty(n, np.int64))
        lt, mt = self.latency, self.macs
        for s in range(0, n, chunk):
            rows = idx[s:s + chunk]
            e = s + len(rows)
            if (rows.view(_UNSIGNED[rows.dtype]) >= self._unsigned_bounds(rows.dtype)[
                    :rows.shape[1]]).any():
                bad = (rows < 0) | (rows >= self.sizes)
                self._out_of_range(s + int(np.flatnonzero(bad.any(1))[0]))
            # addresses, one row per group / term (transposed: each gather reads a row)
            at = (plan.strides @ rows.T.astype(np.float64)).astype(np.intp)
            at += plan.bases[:, None]
            f = at[:groups]
            out.ridge[s:e] = self._gridge[f].sum(0) + self.rb
            if members:
                h = _first_layer(first, self, rows, f)
                np.maximum(h, np.float32(0.0), out=h)
                p = h @ plan.w2 + self.b2
                m = p.mean(1)
                d = p - m[:, None]
                out.mean[s:e] = m
                out.std[s:e] = np.sqrt(np.einsum("ij,ij->i", d, d) / np.float32(members))
            else:
                out.mean[s:e] = out.std[s:e] = 0.0
            t_lat = at[groups:groups + len(lt.base)]
            if plan.both is not None:
                v = plan.both[t_lat].sum(0)
                out.latency_ms[s:e] = v[:, 0] + lt.constant
                out.macs[s:e] = np.rint(v[:, 1] + mt.constant)
            else:
                t_mac = at[groups + len(lt.base):]
                out.latency_ms[s:e] = lt.values[t_lat].sum(0) + lt.constant
                out.macs[s:e] = np.rint(mt.values[t_mac].sum(0) + mt.constant)
        return out

    def _numpy_plan(self) -> _NumpyPlan:
        if self._plan is None:
            self._plan = _NumpyPlan.of(self)
        return self._plan

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
