"""Progressive neural architecture search (Liu et al., ECCV 2018), generic form.

PNAS grows architectures along a *complexity order*: it evaluates every architecture of
the first level, then at each step expands all children (one level up) of the ``beam``
best architectures of the current level, ranks the children with a surrogate fitted on
everything evaluated so far (scored in bulk by the numba kernel), evaluates the ``beam``
best ranked, and refits. After the last level it keeps refining there: the children of a
top architecture are then its one-step changes that stay at the last level.

A complexity order works on option-index rows: ``max_level``, ``level(row)``,
``roots()`` and ``children(row)`` (:class:`ComplexityOrder`). An order may also offer
``features(rows)``, the surrogate's input (None to use the one-hot encoding and the numba
kernel): :class:`PrefixOrder` on a space with a block-count decision gives PNAS's
block-shared encoding, so the surrogate can rank cells one block larger than any it saw.

* :class:`NullOpOrder`: cell spaces whose edges may be ``none``; the level is the number
  of edges that are not (NB201: 1..6).
* :class:`AnchorOrder` (``order="anchor"``): any space; the level is the number of
  decisions that differ from an anchor architecture drawn uniformly with the strategy's
  seed, so nothing about the space's ops is assumed and level 1 differs between seeds.
* :class:`PrefixOrder`: cell spaces built from blocks (decisions whose metadata names a
  ``cell`` and a ``block``: the NASNet, PNAS, DARTS and ENAS-micro spaces). When the
  space has a block-count decision (``cell_blocks``
  of ``get_space("pnas", progressive=True)``, options ``"1"``…``"B"``), level ``b`` is a
  real ``b``-block cell, as in the paper: the later blocks are not built (their decisions
  are inactive and sit at index 0), and a child adds block ``b+1`` in every possible
  setting. Without one (the plain NASNet/PNAS spaces, which always build ``B`` blocks)
  level ``b`` fixes blocks ``b+1…`` to their first options, so a child specifies one more
  block of a full-size cell.

``profile`` sets the other defaults (:mod:`nasir.strategies.pnas_predictors`): ``"paper"``
(the default) is the paper's K = 256 with an ensemble of 5 LSTM predictors trained with an
L1 loss on the cell's tokens (``surrogate="mlp"``: the paper's MLP predictor);
``"nasir"`` is nasir's earlier beam 16 with a one-hot MLP ensemble on rank targets.
``budget=`` (the trials a runner gives) shrinks the beam so that every level is reached.

``first=n`` evaluates a seeded random sample of ``n`` level-1 architectures instead of all
of them (the paper trains all 136 distinct 1-block cells; a short run with a training
estimator cannot). Each surrogate-ranked proposal carries its prediction in
``provenance["pnas_pred"]`` (rank correlation of the surrogate on the trained children).

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

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, fresh_sample
from nasir.strategies.pnas_orders import (
    ORDERS,
    AnchorOrder,
    ComplexityOrder,
    NullOpOrder,
    PrefixOrder,
    _one_changes,
    complexity_order,
)
from nasir.strategies.pnas_predictors import (
    PAPER,
    PROFILES,
    SURROGATES,
    TokenLayout,
    plan_beam,
)
from nasir.strategies.surrogates.data import bounded_scorer, sizes_of, training_set
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge, transform_targets
from nasir.strategies.surrogates.sequence import SEQUENCE_MODELS, SequenceEnsemble

__all__ = ["ORDERS", "PNAS", "PROFILES", "AnchorOrder", "ComplexityOrder", "NullOpOrder",
           "PrefixOrder", "TokenLayout", "complexity_order"]


class PNAS(Strategy):
    """Progressive SMBO: beam ``K`` per level, surrogate-ranked children.

    ``profile`` picks the defaults of the other options (:data:`PROFILES`): ``"paper"``
    (K = 256, an ensemble of 5 LSTM predictors with an L1 loss) or ``"nasir"`` (nasir's
    earlier beam 16 and one-hot MLP ensemble on rank targets). ``surrogate``: ``"lstm"`` or
    ``"mlp"`` (the paper's predictors over the cell's tokens, :class:`TokenLayout`),
    ``"onehot"`` (the numba-scored one-hot MLP, or an order's own features) or ``"ridge"``.
    ``budget``: the trials the run will give; the beam (and a level-1 sample) then shrink so
    that every level is reached (:func:`~nasir.strategies.pnas_predictors.plan_beam`).
    ``order``: a :class:`ComplexityOrder`, ``"anchor"`` (:class:`AnchorOrder` with an
    anchor drawn from ``seed``), or None for the space's default
    (:func:`complexity_order`). Every setting used is in :attr:`settings` and ``state()``.
    """

    name: ClassVar[str] = "pnas"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 profile: str = "paper", beam: int | None = None,
                 order: ComplexityOrder | str | None = None, surrogate: str | None = None,
                 members: int | None = None, hidden: int | None = None,
                 embed: int | None = None, layers: int | None = None,
                 epochs: int | None = None, lr: float | None = None, loss: str | None = None,
                 target: str | None = None, first: int | None = None,
                 budget: int | None = None) -> None:
        super().__init__(space, seed, objective)
        if profile not in PROFILES:
            raise SpecError(f"unknown pnas profile {profile!r}",
                            hint=f"use one of {', '.join(PROFILES)}")
        given = {"beam": beam, "surrogate": surrogate, "members": members, "hidden": hidden,
                 "embed": embed, "layers": layers, "epochs": epochs, "lr": lr, "loss": loss,
                 "target": target}
        opts = {**PROFILES[profile], **{k: v for k, v in given.items() if v is not None}}
        beam = opts["beam"]
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise SpecError(f"pnas beam must be an int >= 1, got {beam!r}")
        if first is not None and (isinstance(first, bool) or not isinstance(first, int)
                                  or first < 1):
            raise SpecError(f"pnas first must be an int >= 1 or None, got {first!r}",
                            hint="None evaluates every level-1 architecture")
        if opts["surrogate"] not in SURROGATES:
            raise SpecError(f"unknown surrogate {opts['surrogate']!r}",
                            hint=f"use one of {', '.join(SURROGATES)}")
        self.surrogate = str(opts["surrogate"])
        if isinstance(order, str):
            if order != "anchor":
                raise SpecError(f"unknown pnas order {order!r}",
                                hint="use 'anchor', a ComplexityOrder, or None (the space's "
                                     "default order)")
            self.order: ComplexityOrder = AnchorOrder.drawn(space, self.rng)
        else:
            self.order = order if order is not None else complexity_order(space)
        self.sizes = sizes_of(space)
        self.seen = SeenArchitectures(space)
        self.tokens = TokenLayout(space, self.order)
        plan = plan_beam(beam, first, budget, self._distinct_roots(), self.order.max_level)
        self.beam, self.first = plan.beam, plan.first
        self.model_options = {k: opts[k] for k in ("members", "hidden", "epochs", "target")}
        self.sequence_options = {k: opts[k] for k in ("members", "embed", "hidden", "layers",
                                                      "epochs", "lr", "loss")}
        if self.surrogate in SEQUENCE_MODELS:  # fails early on a bad option
            self._sequence_model(0)
        self.settings: dict[str, Any] = {
            "profile": profile, **opts, "beam_used": self.beam, "first": first,
            "first_used": self.first, "budget": budget, "levels": self.order.max_level,
            "order": type(self.order).__name__, "scaling": plan.note,
            **({"source": PAPER} if profile == "paper" else {})}
        self.level = 0
        self.queue: list[Assignment] = []
        self.proposed: dict[int, list[Assignment]] = {}

    def state(self) -> dict[str, Any]:
        """The base state plus ``settings`` (profile, every option, the beam used)."""
        return {**super().state(), "settings": dict(self.settings)}

    def _distinct_roots(self) -> int:
        seen = SeenArchitectures(self.space)
        return sum(seen.add(self.space.from_indices(r)) for r in self.order.roots())

    def _sequence_model(self, seed: int) -> SequenceEnsemble:
        return SequenceEnsemble(self.surrogate, vocab=self.tokens.vocab,
                                head=self.tokens.head, block=self.tokens.block, seed=seed,
                                **self.sequence_options)

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

    def report(self) -> dict[int, dict[str, Any]]:
        """Per level of the evaluated results: ``trained`` (count), ``best`` score, and
        ``tau``, the Kendall τ-b between the surrogate's predictions (``pnas_pred``) and the
        scores of the surrogate-ranked architectures trained there (None with fewer than 2,
        or at level 1, which is not ranked).

        >>> from nasir.spaces import get_space
        >>> s = PNAS(get_space("nb201"), beam=2, epochs=5)
        >>> for k, a in enumerate(s.propose(3)):
        ...     s.feedback(a, {"accuracy": 0.5 + 0.1 * k})
        >>> s.report()
        {1: {'trained': 3, 'best': 0.7, 'tau': None}}
        """
        from scipy.stats import kendalltau

        out: dict[int, dict[str, Any]] = {}
        pairs: dict[int, list[tuple[float, float]]] = {}
        for a, m in self.results:
            lv = self.order.level(np.array(self.space.indices(a), dtype=np.int64))
            sc = self.score(m)
            r = out.setdefault(lv, {"trained": 0, "best": float("-inf"), "tau": None})
            r["trained"] += 1
            r["best"] = max(r["best"], sc)
            if "pnas_pred" in a.provenance and np.isfinite(sc):
                pairs.setdefault(lv, []).append((float(a.provenance["pnas_pred"]), sc))
        for lv, ps in pairs.items():
            p, y = np.array(ps).T
            if len(ps) >= 2 and np.ptp(p) > 0 and np.ptp(y) > 0:
                out[lv]["tau"] = float(kendalltau(p, y)[0])
        return dict(sorted(out.items()))

    # -- steps --------------------------------------------------------------------------
    def _advance(self) -> None:
        if self.level == 0:
            self.level = 1
            roots = self.order.roots()
            if self.first is not None:
                roots = roots[self.rng.permutation(len(roots))]
            self._enqueue(roots, self.first, ranked=False)
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

    def _enqueue(self, rows: np.ndarray, limit: int | None, ranked: bool = True) -> None:
        """Queue new architectures from ``rows``: the first ``limit`` (all with None) in
        order, or (``ranked``) the ``limit`` best ranked by the surrogate, each with its
        prediction as ``pnas_pred``; repeats (by canonical hash) skipped."""
        if not len(rows):
            return
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
        pred: np.ndarray | None = None
        if ranked and limit is not None:
            order, pred = self._rank(rows)
        else:
            order = np.arange(len(rows))
        for k in order:
            prov: dict[str, Any] = {"pnas_level": self.level}
            if pred is not None:
                prov["pnas_pred"] = float(pred[k])
            a = self.space.from_indices(rows[k], prov)
            if self.seen.add(a):
                self.queue.append(a)
                if limit is not None and len(self.queue) >= limit:
                    return

    def _rank(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Row positions, best predicted first, and the predictions (a random order and
        None before 2 distinct results)."""
        idx, y = training_set(self.space, [(a, self.score(m)) for a, m in self.results])
        if len(y) < 2 or len(np.unique(y)) < 2:
            return self.rng.permutation(len(rows)), None
        if self.surrogate in SEQUENCE_MODELS:
            seq = self._sequence_model(int(self.rng.integers(2**31)))
            yt = transform_targets(y, str(self.model_options["target"]))
            pred = seq.fit(self.tokens.tokens(idx), yt).predict(self.tokens.tokens(rows))[0]
            return np.argsort(-pred, kind="stable"), pred
        model: MLPEnsemble | Ridge
        if self.surrogate == "onehot":
            model = MLPEnsemble(seed=int(self.rng.integers(2**31)), **self.model_options)
        else:
            model = Ridge(target=str(self.model_options["target"]))
        features: Callable[[np.ndarray], np.ndarray | None] | None = getattr(
            self.order, "features", None)
        X = features(rows) if features is not None else None
        Xt = features(idx) if features is not None and X is not None else None
        if X is not None and Xt is not None:  # the order's own encoding (numpy, not the kernel)
            pred = model.fit(Xt, y).predict(X)[0].astype(np.float64)
            return np.argsort(-pred, kind="stable"), pred
        s = bounded_scorer(self.space, None, None, idx, y, model).score(rows)
        pred = (s.mean if self.surrogate == "onehot" else s.ridge).astype(np.float64)
        return np.argsort(-pred, kind="stable"), pred
