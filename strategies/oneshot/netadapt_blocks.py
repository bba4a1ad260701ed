"""``netadapt_blocks``: a NetAdapt variant over a space's width decisions (not the paper's).

It changes the paper's method (:mod:`nasir.strategies.oneshot.netadapt`, registry name
``netadapt``) in three ways: the "layers" are the space's numeric width decisions (one per
block, every layer of the block shrinks together, only to the decision's options); a
narrowed layer keeps its *first* filters, not those of largest L2 norm; and there is no
long-term fine-tune at the end. Its result stays an assignment of the space.

Given an assignment and a latency budget, shrink the network one width decision at a time:
each iteration, for every numeric width decision (``*filters*``/``*width*`` labels, or
those named in ``decisions``) that can still shrink, propose the largest smaller option that
cuts latency by at least ``step_ms`` (latency from the TVM per-layer LUT, or any
``latency_fn(graph) -> ms``); short-term fine-tune each proposal (``finetune_epochs``)
and keep the most accurate, with its fine-tuned weights. As in NetAdapt the network is
trained first (``pretrain_epochs``) and every proposal starts from the weights of the
network it was pruned from (``inherit=True``:
:func:`~nasir.backends.torch.lowering.inherit_weights` — the narrowed layer keeps its
first filters, the next layer the matching input channels; NetAdapt keeps the filters of
largest L2 norm instead). ``inherit=False`` trains every proposal from scratch. Stop when
the budget is met or nothing can shrink. Each step's latency target decays by
``step_decay`` (as in NetAdapt). The result's ``extra["val_accuracy"]`` is the final
network's accuracy after its last short-term fine-tune.

This is the in-process API; the registry's ``netadapt_blocks`` runs the same variant
through the runner, each proposal a trial (:mod:`.netadapt_blocks_trials`).

>>> from nasir.spaces import get_space
>>> sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
>>> NetAdaptBlocksSearch(sp, budget_ms=0.5, latency_fn=lambda g: 1.0).names
['b1_filters', 'b2_filters', 'b3_filters', 'b4_filters']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.errors import NasirError, SpecError
from nasir.graph import Graph
from nasir.space import Space
from nasir.strategies.oneshot.common import OneShotResult, latency_function

__all__ = ["NetAdaptBlocksSearch", "width_decisions"]


def width_decisions(space: Space, decisions: Sequence[str] | None = None) -> list[str]:
    """The labels NetAdapt-blocks narrows: ``decisions`` (checked), else every decision
    whose metadata says ``width`` and whose options are numbers.

    >>> from nasir.spaces import get_space
    >>> width_decisions(get_space("tiny_mnasnet"))[:2]
    ['b1_filters', 'b2_filters']
    """
    names = list(decisions) if decisions else [
        d.label for d in space.decisions
        if d.meta.role == "width" and all(isinstance(o, (int, float)) for o in d.options)]
    if not names:
        raise SpecError(f"space {space.name} has no numeric width decisions",
                        hint="name them with decisions=[...], or give the width decisions "
                             "role='width' in the DSL")
    return [space.decision(n).label for n in names]


class NetAdaptBlocksSearch:
    """NetAdapt over a space's width decisions (see the module docstring); ``device``: where
    the proposals train (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``)."""

    method: ClassVar[str] = "netadapt_blocks"

    def __init__(self, space: Space, seed: int = 0, *, budget_ms: float,
                 latency_fn: Callable[[Graph], float] | None = None, lut: Any = None,
                 decisions: Sequence[str] | None = None, step_ms: float | None = None,
                 step_decay: float = 0.98, finetune_epochs: int = 1,
                 pretrain_epochs: int = 5, inherit: bool = True,
                 data_fraction: float = 1.0, max_iters: int = 20,
                 device: str = "cpu") -> None:
        if not budget_ms > 0:
            raise SpecError(f"budget_ms must be > 0, got {budget_ms}")
        self.space, self.seed, self.budget = space, int(seed), float(budget_ms)
        self.latency_fn, latency = latency_function(latency_fn, lut)
        self.names = width_decisions(space, decisions)
        self.step_ms, self.step_decay = step_ms, step_decay
        resolve_device(device)  # a device this machine lacks: an error now, not per proposal
        self.cfg = TrainConfig(epochs=finetune_epochs, seed=seed, data_fraction=data_fraction,
                               device=device)
        self.pre_cfg = TrainConfig(epochs=pretrain_epochs, seed=seed,
                                   data_fraction=data_fraction, device=device)
        self.max_iters, self.inherit = max_iters, bool(inherit)
        #: every setting of the run, recorded in the result's ``extra["settings"]``
        self.settings = {"budget_ms": self.budget, "decisions": list(self.names),
                         "step_ms": step_ms, "step_decay": step_decay,
                         "finetune_epochs": finetune_epochs, "pretrain_epochs": pretrain_epochs,
                         "inherit": self.inherit, "data_fraction": data_fraction,
                         "max_iters": max_iters, "device": device,
                         "latency": latency}

    def _lat(self, a: Mapping[str, Any]) -> float:
        return float(self.latency_fn(self.space.instantiate(self.space.check(a))))

    def _proposal(self, a: dict[str, Any], label: str, lat: float, step: float
                  ) -> tuple[dict[str, Any], float] | None:
        opts = sorted(self.space.decision(label).options)
        smaller = [o for o in opts if o < a[label]]
        best = None
        for o in reversed(smaller):  # largest first: least accuracy lost
            b = a | {label: o}
            try:
                lb = self._lat(b)
            except NasirError:  # an option that does not verify here is skipped
                continue
            best = (b, lb)
            if lat - lb >= step:
                break
        return best

    def search(self, assignment: Mapping[str, Any] | None = None) -> OneShotResult:
        """Simplify ``assignment`` (default: the widest option of every width decision,
        the first of the others) until its latency is within the budget."""
        t0 = time.perf_counter()
        if assignment is None:
            assignment = {d.label: max(d.options) if d.label in self.names else d.options[0]
                          for d in self.space.decisions}
        a = dict(self.space.check(assignment))
        lat = self._lat(a)
        step = self.step_ms if self.step_ms is not None else max(0.0, (lat - self.budget) / 4)
        est = TrainingEstimator(self.cfg)
        state = None
        acc: float | None = None
        if self.inherit:  # NetAdapt starts from a trained network
            pre = TrainingEstimator(self.pre_cfg)
            r = pre.estimate(self.space.instantiate(a), keep_state=True)
            state, acc = pre.last_state, r.val_accuracy
        history: list[dict[str, Any]] = [{"iter": 0, "latency_ms": lat, "val_accuracy": acc}]
        it = 0
        while lat > self.budget and it < self.max_iters:
            it += 1
            props = [p for lb in self.names if (p := self._proposal(a, lb, lat, step))]
            if not props:
                break
            scored = []
            for b, lb in props:
                r = est.estimate(self.space.instantiate(self.space.check(b)), init=state,
                                 keep_state=self.inherit)
                scored.append((r.val_accuracy if r.ok else -1.0, -lb, b, lb,
                               est.last_state))
            acc, _, a, lat, state = max(scored, key=lambda s: (s[0], s[1]))
            history.append({"iter": it, "latency_ms": lat, "val_accuracy": acc,
                            "proposals": len(props)})
            step *= self.step_decay
        #: the final network's fine-tuned weights (``inherit=True``), for a long-term
        #: fine-tune: ``TrainingEstimator(...).estimate(graph, init=searcher.state)``
        self.state = state
        return OneShotResult(self.method, self.space.check(a), time.perf_counter() - t0, it,
                             history, {"latency_ms": lat, "budget_ms": self.budget,
                                       "met": lat <= self.budget, "val_accuracy": acc,
                                       "inherit": self.inherit, "variant": self.method,
                                       "settings": self.settings,
                                       "device": str(resolve_device(self.cfg.device))})

