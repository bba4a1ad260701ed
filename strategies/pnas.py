"""Progressive neural architecture search (Liu et al., ECCV 2018), generic form.

PNAS grows architectures along a *complexity order*: it evaluates every architecture of
the first level, then at each step expands all children (one level up) of the ``beam``
best architectures of the current level, ranks the children with a surrogate fitted on
everything evaluated so far (scored in bulk by the numba kernel), evaluates the ``beam``
best ranked, and refits. After the last level it keeps refining there: the children of a
top architecture are then its one-step changes that stay at the last level.

A complexity order works on option-index rows: ``max_level``, ``level(row)``,
``roots()`` and ``children(row)`` (:class:`ComplexityOrder`).

* :class:`NullOpOrder`: cell spaces whose edges may be ``none``; the level is the number
  of edges that are not (NB201: 1..6).
* :class:`PrefixOrder`: cell spaces built from blocks (decisions labelled ``…_b{k}_…``,
  the NASNet and PNAS spaces); level ``b`` fixes blocks ``b+1…`` to their first options,
  so a child specifies one more block. The built-in PNAS/NASNet spaces always build all
  ``B`` blocks, so a level-``b`` architecture there is a ``b``-block specification with
  the remaining blocks at their defaults, not a smaller cell.

:data:`ORDERS` maps space names to their default order.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> order = NullOpOrder(sp)
>>> order.max_level, len(order.roots()), order.level(sp.indices(sp.reference("resnet")))
(6, 24, 3)
>>> s = PNAS(sp, seed=0, beam=4, epochs=20)
>>> {order.level(sp.indices(a)) for a in s.propose(5)}
{1}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, fresh_sample
from nasir.strategies.surrogates.data import bounded_scorer, sizes_of, training_set
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge

__all__ = ["ORDERS", "PNAS", "ComplexityOrder", "NullOpOrder", "PrefixOrder",
           "complexity_order"]


#: an architecture as option indices in schema order
Row = Sequence[int] | np.ndarray


class ComplexityOrder(Protocol):
    """What PNAS needs to grow architectures level by level (rows of option indices)."""

    max_level: int

    def level(self, row: Row) -> int:
        """The complexity of ``row`` (1 is the level PNAS starts from)."""
        ...

    def roots(self) -> np.ndarray:
        """Every architecture of level 1."""
        ...

    def children(self, row: Row) -> np.ndarray:
        """Architectures one level above ``row`` that extend it."""
        ...


def _one_changes(row: np.ndarray, sizes: np.ndarray, where: Sequence[int]) -> np.ndarray:
    out = []
    for d in where:
        for o in range(int(sizes[d])):
            if o != row[d]:
                r = row.copy()
                r[d] = o
                out.append(r)
    return np.array(out, dtype=np.int64).reshape(len(out), len(row))


class NullOpOrder:
    """Level = number of op decisions not set to ``null``; every decision of the space must
    be an op decision offering ``null`` (NB201's ``none``)."""

    def __init__(self, space: Space, null: str = "none") -> None:
        bad = [d.label for d in space.decisions if d.kind != "op" or null not in d.options]
        if bad:
            raise SpecError(f"{space.name} has no {null!r}-edge complexity order: decision "
                            f"{bad[0]} is not an op decision with a {null!r} option",
                            hint="pass order= with a ComplexityOrder for this space")
        self.space, self.null = space, null
        self.sizes = sizes_of(space)
        self.null_idx = np.array([d.index(null) for d in space.decisions], dtype=np.int64)
        self.max_level = len(space.decisions)

    def level(self, row: Row) -> int:
        """Number of non-null edges."""
        return int((np.asarray(row) != self.null_idx).sum())

    def roots(self) -> np.ndarray:
        """One non-null edge, in schema and option order."""
        return _one_changes(self.null_idx, self.sizes, range(len(self.sizes)))

    def children(self, row: Row) -> np.ndarray:
        """Turn one null edge into each non-null op."""
        r = np.asarray(row, dtype=np.int64)
        return _one_changes(r, self.sizes, np.flatnonzero(r == self.null_idx).tolist())


class PrefixOrder:
    """Level ``b`` = the first ``b`` blocks are specified, later blocks sit at their first
    options. Blocks are read from labels ``…_b{k}_…`` (decisions of every cell kind with
    the same ``k`` form one block); other decisions stay at their first option."""

    _BLOCK = re.compile(r"_b(\d+)_")

    def __init__(self, space: Space) -> None:
        groups: dict[int, list[int]] = {}
        for k, d in enumerate(space.decisions):
            m = self._BLOCK.search(d.label)
            if m:
                groups.setdefault(int(m.group(1)), []).append(k)
        if not groups:
            raise SpecError(f"{space.name} has no block-prefix complexity order: no decision "
                            "label names a block (…_b0_…)",
                            hint="pass order= with a ComplexityOrder for this space")
        self.groups = [groups[k] for k in sorted(groups)]
        self.sizes = sizes_of(space)
        self.max_level = len(self.groups)

    def level(self, row: Row) -> int:
        """1 + the last block that differs from its defaults (at least 1)."""
        r = np.asarray(row)
        last = [b for b, g in enumerate(self.groups) if (r[g] != 0).any()]
        return max(1, last[-1] + 1 if last else 1)

    def _block_rows(self, base: np.ndarray, b: int, skip_default: bool) -> np.ndarray:
        g = self.groups[b]
        combos = np.indices(tuple(int(self.sizes[d]) for d in g)).reshape(len(g), -1).T
        if skip_default:
            combos = combos[(combos != 0).any(1)]
        rows = np.repeat(base[None, :], len(combos), axis=0)
        rows[:, g] = combos
        return rows

    def roots(self) -> np.ndarray:
        """Every setting of the first block."""
        return self._block_rows(np.zeros(len(self.sizes), np.int64), 0, False)

    def children(self, row: Row) -> np.ndarray:
        """Every non-default setting of the next block."""
        r = np.asarray(row, dtype=np.int64)
        b = self.level(r)
        if b >= self.max_level:
            return np.zeros((0, len(r)), np.int64)
        return self._block_rows(r, b, True)


#: space name → default complexity order
ORDERS: dict[str, Callable[[Space], ComplexityOrder]] = {
    "nb201": NullOpOrder, "pnas": PrefixOrder, "nasnet": PrefixOrder}


def complexity_order(space: Space) -> ComplexityOrder:
    """The default order of ``space``: from :data:`ORDERS`, else the null-edge order, else
    the block-prefix order, else a ``SpecError`` saying how to give one."""
    make = ORDERS.get(space.name)
    if make is not None:
        return make(space)
    try:
        return NullOpOrder(space)
    except SpecError:
        return PrefixOrder(space)


class PNAS(Strategy):
    """Progressive SMBO: beam ``K`` per level, surrogate-ranked children."""

    name: ClassVar[str] = "pnas"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 beam: int = 16, order: ComplexityOrder | None = None,
                 surrogate: str = "mlp", members: int = 5, hidden: int = 32,
                 epochs: int = 200, target: str = "rank") -> None:
        super().__init__(space, seed, objective)
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise SpecError(f"pnas beam must be an int >= 1, got {beam!r}")
        if surrogate not in ("mlp", "ridge"):
            raise SpecError(f"unknown surrogate {surrogate!r}", hint="use mlp or ridge")
        self.beam = beam
        self.order = order if order is not None else complexity_order(space)
        self.surrogate = surrogate
        self.model_options = {"members": members, "hidden": hidden, "epochs": epochs,
                              "target": target}
        self.sizes = sizes_of(space)
        self.seen = SeenArchitectures(space)
        self.level = 0
        self.queue: list[Assignment] = []
        self.proposed: dict[int, list[Assignment]] = {}

    def _propose(self, n: int) -> list[Assignment]:
        out: list[Assignment] = []
        while len(out) < n:
            if not self.queue:
                self._advance()
            a = self.queue.pop(0)
            self.proposed.setdefault(self.level, []).append(a)
            out.append(a)
        return out

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        self.seen.record(a, self.score(metrics))

    # -- steps --------------------------------------------------------------------------
    def _advance(self) -> None:
        if self.level == 0:
            self.level = 1
            self._enqueue(self.order.roots(), None)
        else:
            parents = self._best_at(self.level)
            if self.level < self.order.max_level:
                self.level += 1
                parts = [self.order.children(p) for p in parents]
            else:
                every = range(len(self.sizes))
                parts = [c[[self.order.level(r) == self.level for r in c]]
                         for c in (_one_changes(p, self.sizes, every) for p in parents)]
            kids = np.concatenate(parts) if parts else np.zeros((0, len(self.sizes)), np.int64)
            self._enqueue(kids, self.beam)
        if not self.queue:
            a = fresh_sample(self.space, self.seen, self.rng)
            a.provenance = {**a.provenance, "pnas_level": self.level}
            self.queue.append(a)

    def _best_at(self, level: int) -> list[np.ndarray]:
        """The ``beam`` best evaluated rows of ``level`` (proposed ones if none)."""
        done = []
        for k, (a, m) in enumerate(self.results):
            row = np.array(self.space.indices(a), dtype=np.int64)
            if self.order.level(row) == level:
                done.append((self.score(m), k, row))
        if not done:
            return [np.array(self.space.indices(a), dtype=np.int64)
                    for a in self.proposed.get(level, [])[: self.beam]]
        done.sort(key=lambda t: (-t[0], t[1]))
        return [row for _, _, row in done[: self.beam]]

    def _enqueue(self, rows: np.ndarray, limit: int | None) -> None:
        """Queue new architectures from ``rows``: all of them in order (``limit`` None), or
        the ``limit`` best ranked by the surrogate; repeats (by canonical hash) skipped."""
        if not len(rows):
            return
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
        order = self._rank(rows) if limit is not None else np.arange(len(rows))
        for k in order:
            a = self.space.from_indices(rows[k], {"pnas_level": self.level})
            if self.seen.add(a):
                self.queue.append(a)
                if limit is not None and len(self.queue) >= limit:
                    return

    def _rank(self, rows: np.ndarray) -> np.ndarray:
        """Row positions, best predicted first (a random order before 2 distinct results)."""
        idx, y = training_set(self.space, [(a, self.score(m)) for a, m in self.results])
        if len(y) < 2 or len(np.unique(y)) < 2:
            return self.rng.permutation(len(rows))
        model: MLPEnsemble | Ridge
        if self.surrogate == "mlp":
            model = MLPEnsemble(seed=int(self.rng.integers(2**31)), **self.model_options)
        else:
            model = Ridge(target=str(self.model_options["target"]))
        s = bounded_scorer(self.space, None, None, idx, y, model).score(rows)
        pred = s.mean if self.surrogate == "mlp" else s.ridge
        return np.argsort(-pred.astype(np.float64), kind="stable")
