"""Shared pieces of the one-shot searches: data, results, latency tables, the wrapper.

One-shot methods (ENAS, DARTS, FBNet, ProxylessNAS, NetAdapt) do not fit propose/feedback:
they train one weight-sharing supernet and end with a single derived assignment. Each has
a ``search(...) -> OneShotResult`` API; :class:`OneShotStrategy` adapts a search to the
:class:`~nasir.strategies.base.Strategy` registry: the first ``propose`` runs the search
and returns the derived assignment (later calls return it again); feedback is recorded.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> table = expected_table(sp, {d.label: np.arange(d.size, dtype=float) for d in sp.decisions})
>>> table.shape
(6, 5)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from nasir.backends.torch.data import digits_splits
from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy

__all__ = ["OneShotResult", "OneShotStrategy", "SearchData", "cycle", "decision_latency",
           "expected_table", "search_data", "weight_optimizer"]


@dataclass
class OneShotResult:
    """What a one-shot search returns: the derived assignment and how it got there."""

    method: str
    assignment: Assignment
    wall_s: float
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"method": self.method, "assignment": self.assignment.to_json(),
                "wall_s": self.wall_s, "epochs": self.epochs, "history": self.history,
                "extra": self.extra}


@dataclass(frozen=True)
class SearchData:
    """Loaders of a one-shot search: ``train_w`` trains weights, ``train_a`` the
    architecture (DARTS' split of the training set in halves), ``val`` is held out."""

    train_w: Any
    train_a: Any
    val: Any


def search_data(batch_size: int = 64, seed: int = 0, fraction: float = 1.0) -> SearchData:
    """Digits: the training split cut in two halves (weights / architecture), plus val."""
    s = digits_splits()
    n = len(s.train)
    idx = np.random.default_rng(seed).permutation(n)[:max(2, round(n * fraction))]
    half = len(idx) // 2
    g = torch.Generator().manual_seed(seed)
    w = DataLoader(Subset(s.train, sorted(idx[:half].tolist())), batch_size=batch_size,
                   shuffle=True, generator=g)
    a = DataLoader(Subset(s.train, sorted(idx[half:].tolist())), batch_size=batch_size,
                   shuffle=True, generator=g)
    v = DataLoader(s.val, batch_size=256, shuffle=False)
    return SearchData(w, a, v)


def cycle(loader: Any) -> Iterator[Any]:
    """Endless iteration over a loader (reshuffled each pass)."""
    while True:
        yield from loader


def decision_latency(space: Space, lut: Any, fixed: Mapping[str, Any] | None = None
                     ) -> dict[str, np.ndarray]:
    """Per free decision, the latency (ms) each option adds, from a TVM latency table.

    Additive model (FBNet/ProxylessNAS): the latency of an assignment is the base
    network's plus, per decision, the difference its option makes to the base (the first
    option of every free decision, ``fixed`` for the pinned ones). The base's own sum is
    spread evenly over the decisions and the LUT's calibration constant is added to it.
    Layers not yet in the table are compiled and measured on the host (slow once).
    """
    fixed = dict(fixed or {})
    free = [d for d in space.decisions if d.label not in fixed]
    base = {d.label: d.options[0] for d in free} | fixed
    base_ms = lut.layer_sum(space.instantiate(space.check(base)))
    out: dict[str, np.ndarray] = {}
    share = (base_ms + lut.constant_ms) / max(1, len(free))
    for d in free:
        row = np.zeros(d.size)
        for i, o in enumerate(d.options):
            if i == 0:
                row[i] = share
                continue
            try:
                ms = lut.layer_sum(space.instantiate(space.check(base | {d.label: o})))
            except Exception:  # an option that does not verify here: never pick it
                ms = float("inf")
            row[i] = share + ms - base_ms
        out[d.label] = row
    return out


def expected_table(space: Space, rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows of :func:`decision_latency` as a ``decisions × max options`` array (0 pad)."""
    labels = [d.label for d in space.decisions if d.label in rows]
    width = max(len(rows[lb]) for lb in labels)
    t = np.zeros((len(labels), width))
    for k, lb in enumerate(labels):
        t[k, :len(rows[lb])] = rows[lb]
    return t


class OneShotStrategy(Strategy):
    """Registry adapter: ``propose`` runs the search once and returns its derived
    assignment; options are passed to the search class. Subclasses set ``search_cls``."""

    name: ClassVar[str] = "oneshot"
    search_cls: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 **options: Any) -> None:
        super().__init__(space, seed, objective)
        if self.search_cls is None:
            raise SpecError(f"{type(self).__name__} has no search class")
        self.searcher = self.search_cls(space, seed=seed, **options)
        self.result: OneShotResult | None = None

    def _propose(self, n: int) -> list[Assignment]:
        if self.result is None:
            t = time.perf_counter()
            self.result = self.searcher.search()
            self.result.wall_s = time.perf_counter() - t
        return [self.result.assignment] * n


def weight_optimizer(net: torch.nn.Module, kind: str, lr: float, momentum: float,
                     weight_decay: float) -> torch.optim.Optimizer:
    """The supernet weight optimizer: ``adam`` (default here: the digits budgets are tens of
    steps, where SGD at the papers' settings has barely moved) or ``sgd`` (the papers')."""
    params = net.weight_parameters()  # type: ignore[operator]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise SpecError(f"unknown weight optimizer {kind!r}", hint="use 'adam' or 'sgd'")
