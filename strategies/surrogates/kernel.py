"""Fused batched scoring of candidates with numba: option indices → predictions + metrics.

One jitted loop takes rows of option indices and, per row and without materialising any
``rows × features`` matrix, computes

* the MLP ensemble's mean and spread: a one-hot row times ``w1`` is the sum of one row of
  ``w1`` per decision (``offsets[d] + idx[d]``), so the encoding and the first layer fuse
  into gathers;
* the ridge prediction (same gathers over its coefficients);
* LUT latency and MACs from two :class:`~nasir.strategies.surrogates.tables.TermTable`.

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

from numba import njit  # noqa: E402  (the cache dir must be set before jitting)

_TILE = 128  # rows per tile: their indices are transposed to int32 columns first


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _addresses(cols, nb, pos, stride, base, out):  # pragma: no cover - jitted
    """``out[t, b]`` = table address of term ``t`` for tile row ``b`` (vectorised over rows;
    padded keys, stride 0, skipped)."""
    for t in range(base.shape[0]):
        b0 = np.int32(base[t])
        for b in range(nb):
            out[t, b] = b0
        for k in range(pos.shape[1]):
            st = np.int32(stride[t, k])
            if st == 0:
                continue
            p = pos[t, k]
            for b in range(nb):
                out[t, b] += cols[p, b] * st


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_columns(idx, s, nb, sizes, cols):  # pragma: no cover - jitted
    """Copy a tile's indices into int32 columns; -1, or the first out-of-range row."""
    bad = False
    for b in range(nb):
        for d in range(idx.shape[1]):
            v = np.int32(idx[s + b, d])
            cols[d, b] = v
            bad |= (v < 0) | (v >= sizes[d])
    if bad:
        for b in range(nb):
            for d in range(idx.shape[1]):
                if idx[s + b, d] < 0 or idx[s + b, d] >= sizes[d]:
                    return s + b
    return -1


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_hidden(nb, feat, gw1, b1, hid):  # pragma: no cover - jitted
    """First-layer sums of the tile: one ``gw1`` row per group, group by group over the
    rows (so no row waits on its own previous add)."""
    width = gw1.shape[1]
    for b in range(nb):
        for j in range(width):
            hid[b, j] = b1[j]
    for g in range(feat.shape[0]):
        for b in range(nb):
            f = feat[g, b]
            for j in range(width):
                hid[b, j] += gw1[f, j]


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_ensemble(s, nb, feat, gw1, b1, w2, b2, hidden, hid, preds, out_mean,
                   out_std):  # pragma: no cover - jitted
    """Per tile: first-layer sums, ReLU-dot per member, then mean and spread over the
    members, each step across the rows."""
    members = b2.shape[0]
    zero = np.float32(0.0)
    for b in range(nb):
        out_mean[s + b] = zero
        out_std[s + b] = zero
    if not members:
        return
    _tile_hidden(nb, feat, gw1, b1, hid)
    for b in range(nb):
        for e in range(members):
            acc = b2[e]
            at = e * hidden
            for j in range(hidden):
                x = hid[b, at + j]
                acc += (x if x > zero else zero) * w2[at + j]
            preds[e, b] = acc
    inv = np.float32(1.0 / members)
    for e in range(members):
        for b in range(nb):
            out_mean[s + b] += preds[e, b] * inv
    for e in range(members):
        for b in range(nb):
            d = preds[e, b] - out_mean[s + b]
            out_std[s + b] += d * d
    for b in range(nb):
        out_std[s + b] = np.sqrt(out_std[s + b] * inv)


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _tile_sums(s, nb, at, values, constant, out):  # pragma: no cover - jitted
    """``out[s + b]`` = constant + Σ_t values[at[t, b]] (float64, in term order)."""
    for b in range(nb):
        out[s + b] = constant
    for t in range(at.shape[0]):
        for b in range(nb):
            out[s + b] += values[at[t, b]]


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False, error_model="numpy")
def _score_kernel(idx, sizes, gpos, gstride, gbase, gw1, gridge, b1, w2, b2, hidden, rb,
                  lpos, lstride, lbase, lval, lconst, mpos, mstride, mbase, mval, mconst,
                  shared, out_mean, out_std, out_ridge, out_lat,
                  out_macs):  # pragma: no cover - jitted
    """Score every row; returns -1, or the first row holding an out-of-range index.

    Rows go in tiles of ``_TILE``: the tile's indices are range-checked and copied into
    int32 columns, so every group and term address is computed for the whole tile at once
    (vectorised over rows); then the ridge sums, the ensemble per row, and the latency /
    MACs sums (one address per term when the two tables share a layout). Indices are read
    in place (int16, int32 or int64); addresses fit int32 (checked by the caller).
    """
    n, dims = idx.shape
    cols = np.empty((dims, _TILE), np.int32)
    feat = np.empty((gbase.shape[0], _TILE), np.int32)
    lat_at = np.empty((lbase.shape[0], _TILE), np.int32)
    mac_at = np.empty((mbase.shape[0], _TILE), np.int32)
    hid = np.empty((_TILE, gw1.shape[1]), np.float32)
    preds = np.empty((b2.shape[0], _TILE), np.float32)
    macs = np.empty(_TILE, np.float64)
    sz = sizes.astype(np.int32)
    for s in range(0, n, _TILE):
        nb = min(n, s + _TILE) - s
        bad = _tile_columns(idx, s, nb, sz, cols)
        if bad >= 0:
            return bad
        _addresses(cols, nb, gpos, gstride, gbase, feat)
        _tile_sums(s, nb, feat, gridge, rb, out_ridge)
        _tile_ensemble(s, nb, feat, gw1, b1, w2, b2, hidden, hid, preds, out_mean, out_std)
        _addresses(cols, nb, lpos, lstride, lbase, lat_at)
        _tile_sums(s, nb, lat_at, lval, lconst, out_lat)
        if not shared:
            _addresses(cols, nb, mpos, mstride, mbase, mac_at)
        _tile_sums(0, nb, lat_at if shared else mac_at, mval, mconst, macs)
        for b in range(nb):
            out_macs[s + b] = np.int64(np.floor(macs[b] + 0.5))
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


_FIRST_LAYER = ("gather", "einsum", "reduceat", "onehot")


@dataclass(frozen=True)
class _NumpyPlan:
    """What :meth:`Scorer.score_numpy` precomputes once: ``strides`` (groups, then latency
    terms, then MACs terms when their layout differs) × decisions, so one BLAS product of
    a chunk's rows gives every address (exact in float64); the address ``bases``; the
    second layer as a block-diagonal ``hidden·members × members`` matrix ``w2``; unsigned
    option counts for a one-pass range check; latency and MACs values side by side
    (``both``) when the two tables share a layout."""

    strides: np.ndarray
    bases: np.ndarray
    w2: np.ndarray
    usizes: np.ndarray
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
        both = np.stack([sc.latency.values, sc.macs.values], 1) if shared else None
        return _NumpyPlan(strides, np.concatenate([t.base for t in tables]).astype(np.intp),
                          w2, sc.sizes.astype(np.uint64), both)


def _first_layer(method: str, sc: Scorer, rows: np.ndarray, f: np.ndarray) -> np.ndarray:
    """First-layer pre-activations of a chunk (``f``: group addresses, groups × rows)."""
    gw1 = sc._gw1
    if method == "gather":
        h = gw1[f[0]] + sc.b1
        for k in range(1, len(f)):
            h += gw1[f[k]]
        return h
    if method == "einsum":
        return np.einsum("grh->rh", gw1[f]) + sc.b1
    if method == "reduceat":
        g = len(f)
        return np.add.reduceat(gw1[f.T.ravel()], np.arange(0, f.size, g), axis=0) + sc.b1
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
                                                         self.w1, self.rw)
        self._plan: _NumpyPlan | None = None
        if max(len(self._gw1), len(self.latency.values), len(self.macs.values)) >= 2**31:
            raise SpecError("a scoring table has 2**31 entries or more (the kernel's "
                            "addresses are int32)", hint="lower group_cap or split the terms")

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

    def score_numpy(self, idx: np.ndarray, chunk: int = 1024, first: str = "gather") -> Scores:
        """Vectorised numpy, written as carefully as the kernel: per chunk of rows (kept in
        cache) one unsigned range check, every group and term address from one BLAS
        product of the rows with a stride matrix, the ridge and the first layer gathered
        from the same pre-summed group tables as the kernel, the second layer as one BLAS
        product with a block-diagonal matrix, both tables' values gathered once per term.

        ``first`` picks how the first layer sums its group rows: ``gather`` (one fancy
        index and in-place add per group), ``einsum`` or ``reduceat`` over one gather of
        every group row, or ``onehot`` (one-hot matrix times ``w1``, BLAS). The scoring
        benchmark times each and compares the kernel with the fastest.
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
            if (rows.astype(np.int64, copy=False).view(np.uint64) >= plan.usizes).any():
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
