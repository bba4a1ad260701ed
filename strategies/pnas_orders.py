"""The complexity orders PNAS grows architectures along (option-index rows):
:class:`ComplexityOrder` (the protocol), :class:`NullOpOrder` (edges not ``none``),
:class:`AnchorOrder` (decisions that differ from a drawn anchor), :class:`PrefixOrder`
(blocks of a cell, PNAS's block-shared features), :data:`ORDERS` and
:func:`complexity_order`. :mod:`~nasir.strategies.pnas` describes each and runs the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from nasir.decision_meta import groups, positions
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.surrogates.data import sizes_of

__all__ = ["ORDERS", "AnchorOrder", "ComplexityOrder", "NullOpOrder", "PrefixOrder",
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


class AnchorOrder:
    """Level = number of decisions set differently from ``anchor`` (a row of option
    indices); works on any space. PNAS draws the anchor uniformly with its seed
    (``order="anchor"``): the space-agnostic counterpart of :class:`NullOpOrder`, whose
    anchor is the all-``none`` cell.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201")
    >>> o = AnchorOrder(sp, np.zeros(6, np.int64))
    >>> o.max_level, len(o.roots()), o.level(o.children(o.roots()[0])[0])
    (6, 24, 2)
    """

    def __init__(self, space: Space, anchor: Row) -> None:
        self.sizes = sizes_of(space)
        self.anchor = np.asarray(anchor, dtype=np.int64)
        if self.anchor.shape != self.sizes.shape or (self.anchor < 0).any() or (
                self.anchor >= self.sizes).any():
            raise SpecError(f"an anchor must be one option index per decision of "
                            f"{space.name}, got {self.anchor.tolist()}",
                            hint="use space.indices(assignment)")
        self.max_level = len(self.sizes)

    @staticmethod
    def drawn(space: Space, rng: np.random.Generator) -> AnchorOrder:
        """With a uniformly drawn anchor."""
        sizes = sizes_of(space)
        return AnchorOrder(space, rng.integers(0, sizes))

    def level(self, row: Row) -> int:
        """Number of decisions away from the anchor."""
        return int((np.asarray(row) != self.anchor).sum())

    def roots(self) -> np.ndarray:
        """Every one-decision change of the anchor."""
        return _one_changes(self.anchor, self.sizes, range(len(self.sizes)))

    def children(self, row: Row) -> np.ndarray:
        """Change one more decision still at the anchor's option."""
        r = np.asarray(row, dtype=np.int64)
        return _one_changes(r, self.sizes, np.flatnonzero(r == self.anchor).tolist())


class PrefixOrder:
    """Level ``b`` = cells of ``b`` blocks. Blocks are the decisions' metadata: those with
    a ``cell`` and a ``block`` (:class:`~nasir.decision_meta.DecisionMeta`; decisions of
    every cell kind with the same block index form one block); other decisions stay at
    their first option.

    ``count``: label of a block-count op decision (options ``"1"``…``"B"``) that builds only
    the first ``b`` blocks; by default the decision whose role is ``count`` with exactly
    those options, if the space has one. With it, level = the count and a child sets the count
    to ``b+1`` and block ``b+1`` to any setting; without it, level = 1 + the last block not
    at its first options and a child gives the next block any non-default setting.
    """

    def __init__(self, space: Space, count: str | None = None) -> None:
        decs = space.decisions
        blocks = groups(decs, "block", positions(decs, cell=...))
        if not blocks:
            raise SpecError(f"{space.name} has no block-prefix complexity order: no decision "
                            "belongs to a cell block (metadata cell and block)",
                            hint="pass order= with a ComplexityOrder for this space, or build "
                                 "the cells inside SpaceBuilder.scope(cell=..., block=...)")
        self.groups = list(blocks.values())
        self.sizes = sizes_of(space)
        self.max_level = len(self.groups)
        counts = tuple(str(b) for b in range(1, self.max_level + 1))
        labels = [d.label for d in space.decisions]
        if count is None:
            found = [k for k in positions(decs, role="count") if decs[k].options == counts]
            self.count: int | None = found[0] if found else None
        elif count not in labels or space.decisions[labels.index(count)].options != counts:
            raise SpecError(f"{space.name}: {count!r} is not a block-count decision with "
                            f"options {list(counts)}", where="PrefixOrder count",
                            hint="build the space with progressive=True, or omit count")
        else:
            self.count = labels.index(count)

    def level(self, row: Row) -> int:
        """The block count (or 1 + the last block not at its defaults, at least 1)."""
        r = np.asarray(row)
        if self.count is not None:
            return int(r[self.count]) + 1
        last = [b for b, g in enumerate(self.groups) if (r[g] != 0).any()]
        return max(1, last[-1] + 1 if last else 1)

    def _block_rows(self, base: np.ndarray, b: int, skip_default: bool) -> np.ndarray:
        g = self.groups[b]
        combos = np.indices(tuple(int(self.sizes[d]) for d in g)).reshape(len(g), -1).T
        if skip_default:
            combos = combos[(combos != 0).any(1)]
        rows = np.repeat(base[None, :], len(combos), axis=0)
        rows[:, g] = combos
        if self.count is not None:
            rows[:, self.count] = b
        return rows

    def roots(self) -> np.ndarray:
        """Every setting of the first block."""
        return self._block_rows(np.zeros(len(self.sizes), np.int64), 0, False)

    def features(self, rows: np.ndarray) -> np.ndarray | None:
        """PNAS's block-count-invariant surrogate input (with a count decision; else None):
        per position within a block (input a, op a, …) a one-hot of the option, averaged
        over the cell's built blocks, then a one-hot of every decision outside the blocks.

        All blocks share the weights of a position, so what the surrogate learns from
        ``b``-block cells carries over to the new block of a ``b+1``-block child (the
        paper's MLP averages per-block embeddings in the same way); a position-wise one-hot
        would know nothing about a block no trained cell had.
        """
        if self.count is None or len({len(g) for g in self.groups}) != 1:
            return None
        r = np.asarray(rows, dtype=np.int64).reshape(-1, len(self.sizes))
        g = np.array(self.groups)  # blocks × positions
        width = self.sizes[g].max(0)
        offs = np.concatenate([[0], np.cumsum(width)[:-1]])
        built = np.arange(len(g))[None, :] < (r[:, self.count] + 1)[:, None]  # rows × blocks
        X = np.zeros((len(r), int(width.sum())))
        for pos in range(g.shape[1]):
            for b in range(len(g)):
                np.add.at(X, (np.arange(len(r)), offs[pos] + r[:, g[b, pos]]),
                          built[:, b].astype(np.float64))
        X /= built.sum(1, keepdims=True)
        inside = {self.count, *g.ravel().tolist()}
        rest = [d for d in range(len(self.sizes)) if d not in inside]
        extra = [np.eye(int(self.sizes[d]))[r[:, d]] for d in rest]
        return np.concatenate([X, *extra], axis=1) if extra else X

    def children(self, row: Row) -> np.ndarray:
        """Every setting of the next block (every non-default one without a count)."""
        r = np.asarray(row, dtype=np.int64)
        b = self.level(r)
        if b >= self.max_level:
            return np.zeros((0, len(r)), np.int64)
        return self._block_rows(r, b, self.count is None)


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
