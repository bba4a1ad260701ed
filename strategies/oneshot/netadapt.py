"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network to a latency budget, one
layer's filters at a time, guided by measured per-layer latency.

The paper's Algorithm 1 on the network of one assignment of a space (a reference or any
architecture), its composites expanded to primitive layers; a *layer* is a channel group
(:mod:`~nasir.backends.torch.pruning`: a conv/linear layer together with the layers that a
residual add or an SE gate ties to it, which must keep the same filters):

1. Start from a trained network (``init``: its weights, else ``pretrain_epochs`` of
   training) and its latency ``Res_0``; the budget is ``budget_ms``, else
   ``budget_ratio · Res_0``.
2. Iteration ``i`` (while the latency is above the budget, at most ``max_iters``): the
   target is ``Res_{i-1} − ΔR_i``, ``ΔR_i = reduction_ratio · Res_0 · reduction_decay^(i-1)``
   (the official code's schedule). For **each layer**: the largest filter count, a
   multiple of ``filter_step`` below its width, whose network meets the target by the
   latency model (a layer that cannot proposes its smallest count, as the official code
   does); keep the filters of largest L2 norm (the next layer keeps the matching input
   channels, batch norms their statistics); short-term fine-tune that proposal
   ``short_term_epochs`` from those weights (0: score the pruned weights as they are).
3. Keep the proposal of highest validation accuracy among those meeting the target (all
   of them when none does; ``pick="ratio"``: the official code's least accuracy lost per
   latency saved).
4. After the last iteration, long-term fine-tune the network ``long_term_epochs``.

Latency: ``latency_fn(graph) -> ms``, or a per-layer table ``lut`` whose
``predict(graph)`` sums the layers' latencies (default
:class:`~nasir.backends.tvm.lut.LatencyLUT` on the host at ``runs/oneshot_lut.db``: every
distinct layer compiled and measured alone with TVM once, plus a calibrated constant).
Fine-tuning uses the official code's optimizer (SGD, lr 1e-3, momentum 0.9, weight decay
1e-4; ``train`` overrides any :class:`~nasir.backends.torch.estimator.TrainConfig` field);
pre-training uses the estimator's defaults.

The adapted network is not in the space: the result's ``assignment`` is the start
architecture, ``extra["widths"]`` the filters of every layer, ``extra["graph"]`` the
adapted graph's text; :attr:`NetAdaptSearch.graph` and :attr:`NetAdaptSearch.state` hold
it and its weights. This is the in-process API; the registry's ``netadapt`` runs the
same algorithm through the runner, each proposal a trial
(:mod:`.netadapt_trials`); ``netadapt_blocks`` (:mod:`.netadapt_blocks`) is the older
variant over a space's per-block width decisions.

>>> from nasir.spaces import get_space
>>> sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
>>> s = NetAdaptSearch(sp, latency_fn=lambda g: 1.0)
>>> list(s.layer_widths(sp.reference("small")).items())[:3]
[('12', 16), ('18', 8), ('20', 24)]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.torch.lowering import load_weights, lower, prepare
from nasir.backends.torch.pruning import (
    ChannelGroup,
    channel_groups,
    prune_state,
    select_filters,
    set_widths,
)
from nasir.errors import NasirError, SpecError
from nasir.graph import Graph
from nasir.space import Space
from nasir.strategies.oneshot.common import OneShotResult, latency_function

__all__ = ["FINETUNE", "PICKS", "NetAdaptSearch"]

#: how proposals are picked: the paper's (highest accuracy) or the official code's
PICKS = ("accuracy", "ratio")
#: the official code's fine-tuning optimizer (``network_utils_*.py``)
FINETUNE: dict[str, Any] = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9,
                            "weight_decay": 1e-4}


@dataclass
class _Net:
    """The network NetAdapt holds: per-layer widths, graph, weights, latency, accuracy."""

    widths: dict[str, int]
    graph: Graph
    state: dict[str, torch.Tensor]
    latency_ms: float
    accuracy: float


def _positive(name: str, v: Any, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else \
        isinstance(v, (int, float)) and not isinstance(v, bool)
    if not ok or not (v >= 0 if zero else v > 0):
        kind = "an int" if integer else "a number"
        raise SpecError(f"NetAdapt: {name} must be {kind} {'>= 0' if zero else '> 0'}, "
                        f"got {v!r}")


class NetAdaptSearch:
    """The paper's NetAdapt (see the module docstring); ``device``: where proposals train
    (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``); ``layers``: only these channel
    groups (names from :meth:`layer_widths`); ``start``: the architecture (a reference
    name or an assignment; default the space's first reference, else its widest network);
    ``init``: the start network's trained weights (state dict of
    ``lower(space.instantiate(start))``)."""

    method: ClassVar[str] = "netadapt"

    def __init__(self, space: Space, seed: int = 0, *, budget_ms: float | None = None,
                 budget_ratio: float = 0.5, latency_fn: Callable[[Graph], float] | None = None,
                 lut: Any = None, reduction_ratio: float = 0.025,
                 reduction_decay: float = 0.96, filter_step: int = 8, max_iters: int = 30,
                 short_term_epochs: int = 1, long_term_epochs: int = 5,
                 pretrain_epochs: int = 5, pick: str = "accuracy",
                 layers: Sequence[str] | None = None,
                 start: str | Mapping[str, Any] | None = None,
                 init: Mapping[str, torch.Tensor] | None = None, data_fraction: float = 1.0,
                 train: Mapping[str, Any] | None = None, device: str = "cpu") -> None:
        if budget_ms is not None:
            _positive("budget_ms", budget_ms)
        _positive("budget_ratio", budget_ratio)
        _positive("reduction_ratio", reduction_ratio)
        _positive("reduction_decay", reduction_decay)
        for name, v, zero in (("filter_step", filter_step, False), ("max_iters", max_iters, False),
                              ("short_term_epochs", short_term_epochs, True),
                              ("long_term_epochs", long_term_epochs, True),
                              ("pretrain_epochs", pretrain_epochs, True)):
            _positive(name, v, integer=True, zero=zero)
        if pick not in PICKS:
            raise SpecError(f"NetAdapt: unknown pick {pick!r}", hint=f"use one of {PICKS}")
        self.space, self.seed = space, int(seed)
        self.latency_fn, latency = latency_function(latency_fn, lut)
        self.budget_ms, self.budget_ratio = budget_ms, float(budget_ratio)
        self.reduction_ratio, self.reduction_decay = float(reduction_ratio), float(reduction_decay)
        self.filter_step, self.max_iters, self.pick = filter_step, max_iters, pick
        self.short_term_epochs, self.long_term_epochs = short_term_epochs, long_term_epochs
        self.pretrain_epochs, self.layers, self.start = pretrain_epochs, layers, start
        self.init = init
        resolve_device(device)  # a device this machine lacks: an error now, not per proposal
        self.device = device
        fine = {**FINETUNE, **dict(train or {})}
        base = {"seed": self.seed, "data_fraction": data_fraction, "device": device}
        try:
            self._short = TrainConfig(**{**base, **fine, "epochs": max(1, short_term_epochs)})
            self._long = TrainConfig(**{**base, **fine, "epochs": max(1, long_term_epochs)})
            self._pre = TrainConfig(**{**base, "epochs": max(1, pretrain_epochs)})
        except TypeError as e:
            raise SpecError(f"NetAdapt: bad train option: {e}",
                            hint="train takes TrainConfig fields (optimizer, lr, …)") from None
        #: every setting of the run, recorded in the result's ``extra["settings"]``
        self.settings: dict[str, Any] = {
            "budget_ms": budget_ms, "budget_ratio": self.budget_ratio, "latency": latency,
            "reduction_ratio": self.reduction_ratio, "reduction_decay": self.reduction_decay,
            "filter_step": filter_step, "max_iters": max_iters, "pick": pick,
            "short_term_epochs": short_term_epochs, "long_term_epochs": long_term_epochs,
            "pretrain_epochs": pretrain_epochs, "init": init is not None,
            "layers": None if layers is None else list(layers),
            "start": start if start is None or isinstance(start, str) else dict(start),
            "data_fraction": data_fraction, "finetune": fine, "device": device}
        #: the adapted network and its weights, after :meth:`search`
        self.graph: Graph | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self._cache: dict[tuple[tuple[str, int], ...], tuple[Graph, float]] = {}
        self._val: Any = None

    # -- the network -------------------------------------------------------------------
    def _start_assignment(self) -> Mapping[str, Any]:
        if isinstance(self.start, str):
            return self.space.reference(self.start)
        if self.start is not None:
            return self.start
        if self.space.references:
            return self.space.reference(next(iter(self.space.references)))
        return {d.label: max(d.options) if d.meta.role == "width"
                and all(isinstance(o, (int, float)) for o in d.options) else d.options[0]
                for d in self.space.decisions}

    def _groups(self, base: Graph) -> dict[str, ChannelGroup]:
        groups = {c.name: c for c in channel_groups(base)}
        if self.layers is None:
            return groups
        bad = [n for n in self.layers if n not in groups]
        if bad:
            raise SpecError(f"NetAdapt: no prunable layer {bad[0]!r} in this network",
                            hint=f"layers: {', '.join(groups)}")
        return {n: groups[n] for n in self.layers}

    def layer_widths(self, assignment: Mapping[str, Any]) -> dict[str, int]:
        """The prunable layers (channel groups) of ``assignment``'s network and their
        widths: the names ``layers`` and the result's ``widths`` use."""
        base = prepare(self.space.instantiate(self.space.check(assignment)))
        return {n: c.width for n, c in self._groups(base).items()}

    def _measure(self, base: Graph, groups: Mapping[str, ChannelGroup],
                 widths: Mapping[str, int]) -> tuple[Graph, float]:
        key = tuple(sorted(widths.items()))
        if key not in self._cache:
            g = set_widths(base, widths, list(groups.values()))
            self._cache[key] = (g, float(self.latency_fn(g)))
        return self._cache[key]

    # -- training ----------------------------------------------------------------------
    def _evaluate(self, g: Graph, state: Mapping[str, torch.Tensor]) -> float:
        """Validation accuracy of ``g`` with weights ``state``, untrained further."""
        m = lower(g, seed=self.seed)
        load_weights(m, state)
        dev = resolve_device(self.device)
        m.to(dev).eval()
        if self._val is None:
            self._val = TrainingEstimator(self._short).data.val
        right = total = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(self._val, batch_size=256):
                right += int((m(x.to(dev)).argmax(1) == y.to(dev)).sum())
                total += len(y)
        return right / max(total, 1)

    def _train(self, cfg: TrainConfig, g: Graph, state: Mapping[str, torch.Tensor] | None
               ) -> tuple[float, dict[str, torch.Tensor]] | None:
        est = TrainingEstimator(cfg)
        r = est.estimate(g, init=state, keep_state=True)
        if not r.ok or est.last_state is None:
            return None
        return r.val_accuracy, est.last_state

    def _start_net(self, base: Graph, widths: dict[str, int], latency: float) -> _Net:
        if self.init is not None:
            state = {k: torch.as_tensor(v) for k, v in self.init.items()}
            return _Net(widths, base, state, latency, self._evaluate(base, state))
        if self.pretrain_epochs == 0:
            state = dict(lower(base, seed=self.seed).state_dict())
            return _Net(widths, base, state, latency, self._evaluate(base, state))
        got = self._train(self._pre, base, None)
        if got is None:
            raise NasirError("NetAdapt: the start network failed to train",
                             hint="check it trains alone with the training estimator")
        return _Net(widths, base, got[1], latency, got[0])

    # -- one iteration -----------------------------------------------------------------
    def _choose_filters(self, base: Graph, groups: Mapping[str, ChannelGroup],
                        widths: Mapping[str, int], name: str, target: float
                        ) -> tuple[int, Graph, float, bool] | None:
        """The largest filter count (multiple of ``filter_step``) for layer ``name`` whose
        network meets ``target``, with that network, its latency and ``True``; when none
        does, the smallest count tried and ``False`` (the official code's fallback)."""
        w = widths[name]
        last = None
        for k in range(w // self.filter_step * self.filter_step, 0, -self.filter_step):
            if k >= w:
                continue
            g, lat = self._measure(base, groups, {**widths, name: k})
            if lat <= target:
                return k, g, lat, True
            last = (k, g, lat, False)
        return last

    def _proposal(self, groups: Mapping[str, ChannelGroup], net: _Net, name: str,
                  chosen: tuple[int, Graph, float, bool]) -> tuple[_Net, dict[str, Any]] | None:
        """Layer ``name`` cut to the ``chosen`` count, largest-norm filters kept, short-term
        fine-tuned; ``None`` if its training fails."""
        k, g, lat, met = chosen
        keep = select_filters(net.state, groups[name], k)
        state = prune_state(net.state, groups[name], keep)
        if self.short_term_epochs == 0:
            acc = self._evaluate(g, state)
        else:
            got = self._train(self._short, g, state)
            if got is None:
                return None
            acc, state = got
        rec = {"layer": name, "filters": k, "was": net.widths[name], "latency_ms": lat,
               "met_target": met, "val_accuracy": acc}
        return _Net({**net.widths, name: k}, g, state, lat, acc), rec

    def _score(self, p: _Net, net: _Net) -> tuple[float, float]:
        if self.pick == "ratio":  # the official code's pick (master.py _find_best_model)
            return (-(net.accuracy - p.accuracy + 1e-6) / (net.latency_ms - p.latency_ms + 1e-5),
                    -p.latency_ms)
        return p.accuracy, -p.latency_ms

    # -- the search --------------------------------------------------------------------
    def search(self, assignment: Mapping[str, Any] | None = None) -> OneShotResult:
        """Adapt the network of ``assignment`` (default ``start``) to the budget."""
        t0 = time.perf_counter()
        a = self.space.check(self._start_assignment() if assignment is None else assignment)
        base = prepare(self.space.instantiate(a))
        groups = self._groups(base)
        start_widths = {n: c.width for n, c in groups.items()}
        self._cache.clear()
        lat0 = self._measure(base, groups, start_widths)[1]
        net = self._start_net(base, dict(start_widths), lat0)
        start_acc = net.accuracy
        budget = self.budget_ms if self.budget_ms is not None else self.budget_ratio * lat0
        history: list[dict[str, Any]] = [{"iter": 0, "latency_ms": lat0,
                                          "val_accuracy": start_acc}]
        stop = "budget met"
        while net.latency_ms > budget:
            it = len(history)
            if it > self.max_iters:
                stop = "max_iters"
                break
            target = net.latency_ms - lat0 * self.reduction_ratio * self.reduction_decay ** (it - 1)
            choices = {n: c for n in groups
                       if (c := self._choose_filters(base, groups, net.widths, n, target))
                       and (c[3] or c[2] < net.latency_ms)}
            # layers meeting the target; if none does, every layer's largest cut (the
            # official code fine-tunes both kinds and may pick either; the paper assumes met)
            pool = [n for n, c in choices.items() if c[3]] or list(choices)
            props = [p for n in pool if (p := self._proposal(groups, net, n, choices[n]))]
            if not props:
                stop = "no layer can lower the latency" if not choices else \
                    "every proposal failed to train"
                break
            net, rec = max(props, key=lambda p: self._score(p[0], net))
            history.append({
                "iter": it, "target_ms": target, "latency_ms": net.latency_ms,
                "met_target": rec["met_target"], "val_accuracy": net.accuracy,
                "layer": rec["layer"], "filters": rec["filters"],
                "proposals": [p[1] for p in props],
                "not_trained": {n: choices[n][0] for n in choices if n not in pool}})
        short_acc, long_acc = net.accuracy, None
        if self.long_term_epochs > 0:
            got = self._train(self._long, net.graph, net.state)
            if got is not None:
                long_acc, net.state = got
        self.graph, self.state = net.graph, net.state
        extra = {"variant": self.method, "settings": self.settings, "stop": stop,
                 "start_latency_ms": lat0, "latency_ms": net.latency_ms, "budget_ms": budget,
                 "met": net.latency_ms <= budget, "start_widths": start_widths,
                 "widths": dict(net.widths), "layers": {
                     n: {"sources": list(c.sources),
                         "origin": (base.node(c.sources[0]).meta or {}).get("origin")}
                     for n, c in groups.items()},
                 "start_val_accuracy": start_acc, "short_term_val_accuracy": short_acc,
                 "long_term_val_accuracy": long_acc,
                 "val_accuracy": short_acc if long_acc is None else long_acc,
                 "short_term_epochs": self.short_term_epochs,
                 "long_term_epochs": self.long_term_epochs, "latency_queries": len(self._cache),
                 "graph": net.graph.text(), "device": str(resolve_device(self.device))}
        return OneShotResult(self.method, a, time.perf_counter() - t0, len(history) - 1,
                             history, extra)

