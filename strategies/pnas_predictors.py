"""What ``PNAS(profile=…)`` sets, the tokens its LSTM / MLP predictors read, and how the
paper's beam fits a trial budget.

Profiles (:data:`PROFILES`; an option given explicitly wins over its profile):

* ``paper`` (the default): Liu et al., ECCV 2018 — beam ``K = 256``; the predictor is an
  ensemble of 5 LSTMs (``surrogate="lstm"``; ``"mlp"`` is the paper's other predictor)
  trained with an L1 loss on the cell's token sequence, embeddings and LSTM state of 100,
  the MLP with 2 hidden layers of 100
  (:class:`~nasir.strategies.surrogates.sequence.SequenceEnsemble`).
  ``B = 5`` is the block count of the PNAS space (``get_space("pnas")``); on other spaces
  the levels are those of the space's complexity order (NB201: 6 edges).
* ``nasir``: nasir's earlier PNAS — beam 16, one-hot MLP ensemble (5 × 32, one hidden
  layer, squared loss on rank targets, :class:`~nasir.strategies.surrogates.models.MLPEnsemble`),
  which reads an order's own features where it has them.

On the NB201 table at 150 queries (seeds 0–99, notes/issue-21-paper-defaults.log) the
paper profile with ``budget=150`` (K' = 25) scores 0.054 mean regret, 0.717 without it (the
run ends in level 2); the MLP predictor on its default schedule (20 epochs, lr 0.002)
underfits there (0.471), where the LSTM does not.

**Scaling to a budget** (:func:`plan_beam`): PNAS trains every level-1 cell, then ``K`` per
level up to the last. A runner that gives ``budget`` trials, fewer than that needs, passes
``budget=``: the beam shrinks so that every level is reached, ``K' = min(K, ⌊(budget −
n₁) / (levels − 1)⌋)`` with ``n₁`` the distinct level-1 cells; when even ``K' = 1`` does not
fit, ``first`` samples level 1 (``⌊budget / levels⌋`` cells) and ``K'`` takes the rest.
Without ``budget`` the beam is used as given, and a short run simply ends inside an early
level. Trials left after the last level refine there (one-step changes of the best cells
that stay at the last level).

>>> p = plan_beam(256, None, 150, 24, 6)
>>> p.beam, p.first, p.note
(25, None, 'beam 256 -> 25 so that 150 trials reach level 6 (24 level-1 cells, then 25 per level)')
>>> plan_beam(256, None, 20, 136, 5).beam, plan_beam(256, None, 20, 136, 5).first
(4, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.surrogates.data import sizes_of

__all__ = ["PAPER", "PROFILES", "SURROGATES", "BeamPlan", "TokenLayout", "plan_beam"]

#: surrogate names: the paper's two predictors over tokens, nasir's one-hot MLP, ridge
SURROGATES = ("lstm", "mlp", "onehot", "ridge")

#: option defaults per profile
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"beam": 256, "surrogate": "lstm", "members": 5, "embed": 100, "hidden": 100,
              "layers": 2, "epochs": 20, "lr": 0.002, "loss": "l1", "target": "raw"},
    "nasir": {"beam": 16, "surrogate": "onehot", "members": 5, "embed": 100, "hidden": 32,
              "layers": 1, "epochs": 200, "lr": 0.01, "loss": "l2", "target": "rank"},
}

#: where the paper profile's settings come from, and what nasir chose itself
PAPER: dict[str, Any] = {
    "paper": "Liu et al., Progressive Neural Architecture Search, ECCV 2018",
    "from_paper": ["beam K = 256", "B = 5 blocks (the pnas space's default)",
                   "ensemble of 5 predictors, L1 loss", "LSTM or MLP over the cell's tokens",
                   "embedding 100, LSTM state 100; MLP 2 hidden layers of 100",
                   "every level-1 cell trained, K children per level after"],
    "nasir_choices": ["Adam lr 0.002, 20 epochs of batches of 32 (no official search code "
                      "was released; chosen on NB201 random samples, not benchmark seeds)",
                      "targets mapped affinely into [0.1, 0.9] before the sigmoid output",
                      "members differ in initialisation and batch order"],
}


@dataclass(frozen=True)
class BeamPlan:
    """The beam and level-1 sample a search uses, and why."""

    beam: int
    first: int | None
    note: str


def plan_beam(beam: int, first: int | None, budget: int | None, n_roots: int,
              levels: int) -> BeamPlan:
    """Fit ``beam`` (and ``first``) to ``budget`` trials over ``levels`` levels whose first
    has ``n_roots`` distinct cells (see the module docstring)."""
    if budget is None:
        return BeamPlan(beam, first, f"beam {beam} as given (no budget)")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SpecError(f"pnas budget must be an int >= 1 or None, got {budget!r}",
                        hint="the number of trials the run will give")
    n1 = min(first or n_roots, n_roots)
    later = max(1, levels - 1)
    per = (budget - n1) // later
    if per >= 1:
        k = min(beam, per)
        how = "fits" if k == beam else f"-> {k} so that"
        return BeamPlan(k, first, f"beam {beam} {how} {budget} trials reach level {levels} "
                                  f"({n1} level-1 cells, then {k} per level)")
    f = max(1, budget // max(1, levels))
    k = max(1, min(beam, (budget - f) // later))
    return BeamPlan(k, f, f"{budget} trials cannot hold all {n1} level-1 cells and a beam "
                          f"of 1 per level: {f} sampled level-1 cells, beam {k}")


class TokenLayout:
    """A cell as the token sequence PNAS's predictors read.

    With a block order (:class:`~nasir.strategies.pnas.PrefixOrder`, blocks of equal size)
    the tokens are the decisions outside the blocks (``head``), then the decisions of each
    built block (level ``b`` builds ``b``; later blocks are padded with ``-1``). Otherwise
    the whole cell is one block of every decision in schema order (NB201: its 6 edges).
    Decisions of one kind share embeddings by option (all op decisions offering
    ``sep_conv_3x3`` read the same id; input decisions share ids by input index), as the
    paper shares one embedding table for inputs and one for ops.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201")
    >>> t = TokenLayout(sp, None)
    >>> t.vocab, t.head, t.block, t.tokens([sp.indices(sp.reference("resnet"))]).tolist()
    (5, 0, 6, [[3, 0, 3, 1, 0, 0]])
    """

    def __init__(self, space: Space, order: Any) -> None:
        sizes = sizes_of(space)
        groups: Sequence[Sequence[int]] | None = getattr(order, "groups", None)
        count: int | None = getattr(order, "count", None)
        self._level: Callable[[np.ndarray], int] | None = None
        if groups and len({len(g) for g in groups}) == 1:
            self.blocks = np.array(groups, dtype=np.int64)
            inside = set(self.blocks.ravel().tolist()) | ({count} if count is not None else set())
            self._head = np.array([d for d in range(len(sizes)) if d not in inside], np.int64)
            self._level = order.level
        else:
            self.blocks = np.arange(len(sizes), dtype=np.int64)[None, :]
            self._head = np.zeros(0, np.int64)
        vocab: dict[tuple[str, Any], int] = {}
        self._ids = [np.array([vocab.setdefault((d.kind, o), len(vocab)) for o in d.options],
                              dtype=np.int64) for d in space.decisions]
        self.vocab = max(1, len(vocab))
        self.head = len(self._head)
        self.block = int(self.blocks.shape[1])
        self._width = len(sizes)

    def tokens(self, rows: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """``(rows, head + blocks·block)`` token ids, ``-1`` where a block is not built."""
        r = np.asarray(rows, dtype=np.int64).reshape(-1, self._width)
        nb = len(self.blocks)
        out = np.full((len(r), self.head + nb * self.block), -1, np.int64)
        for j, d in enumerate(self._head.tolist()):
            out[:, j] = self._ids[d][r[:, d]]
        built = (np.array([self._level(row) for row in r], np.int64) if self._level
                 else np.full(len(r), nb))
        for b in range(nb):
            on = built > b
            for j, d in enumerate(self.blocks[b].tolist()):
                out[on, self.head + b * self.block + j] = self._ids[d][r[on, d]]
        return out
