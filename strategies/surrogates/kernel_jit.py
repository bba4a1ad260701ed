"""The numba half of the fused scorer: where compiled kernels are cached, and the jitted
tile loops that :meth:`~nasir.strategies.surrogates.kernel.Scorer.score` calls.

Rows are scored in tiles of ``_TILE`` (indices transposed to int32 columns, every group and
term address computed for the whole tile, then the models and term sums row by row);
``_score_parallel`` hands blocks of ``_BLOCK`` tiles to numba's threads. Importing this
module points numba's on-disk cache at :func:`cache_dir` first.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["cache_dir"]

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

from numba import njit, prange  # noqa: E402  (the cache dir must be set first)

_TILE = 128  # rows per tile: their indices are transposed to int32 columns first
_BLOCK = 16  # tiles per parallel work item (2,048 rows)
_jit = njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")


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
