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

from dataclasses import dataclass

import numpy as np
from numba import config as numba_config
from numba import get_num_threads, set_num_threads, set_parallel_chunksize

from nasir.errors import SpecError
from nasir.strategies.surrogates.kernel_jit import (
    _BLOCK,
    _TILE,
    _score_kernel,
    _score_parallel,
    cache_dir,
)
from nasir.strategies.surrogates.kernel_layout import (
    _UNSIGNED,
    _aligned,
    _grouped,
    group_decisions,
    onehot,
)
from nasir.strategies.surrogates.kernel_numpy import (
    _FIRST_LAYER,
    _first_layer,
    _NumpyPlan,
    _term_python,
)
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge
from nasir.strategies.surrogates.tables import TermTable

__all__ = ["Scorer", "Scores", "cache_dir", "group_decisions", "onehot"]


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
                h = _first_layer(first, self._gw1, rows, f, self.sizes, self.w1, self.b1)
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
            self._plan = _NumpyPlan.of(self._layout, self.latency, self.macs, len(self.sizes),
                                      self.w1, self.w2, self.b2, self.hidden, self._lval)
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
