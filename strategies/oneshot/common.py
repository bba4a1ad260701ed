"""Shared pieces of the one-shot searches: data, results, latency tables, the wrapper.

One-shot methods (ENAS, DARTS, FBNet, ProxylessNAS, NetAdapt) do not fit propose/feedback:
they train one weight-sharing supernet and end with a single derived assignment. Each has
a ``search(...) -> OneShotResult`` API;
:class:`~nasir.strategies.oneshot.strategy.OneShotStrategy` adapts a search to the
:class:`~nasir.strategies.base.Strategy` registry: a search job of the runner, then the
derived children as trials.

Every search takes ``device`` (``cpu`` by default; ``auto``, ``cuda``, ``cuda:N``, ``mps``;
the runtime passes the experiment's): the supernet and its batches live there (digits held
on the device, :func:`search_data`), the RL controller and the latency tables' arithmetic
stay small. The result's ``extra["device"]`` says where it ran. Supernets train in fp32.

Paper names run the paper's method: a search with variants (DARTS, FBNet, ProxylessNAS)
takes ``variant=`` (a registry name: ``darts``, ``darts_pt``, …) whose frozen
:class:`SearchSettings` are the defaults, and options override single settings. Every run
records ``variant``, all ``settings`` and what the options ``changed`` from the variant,
in the result's ``extra`` and the registry strategy's state
(:meth:`~nasir.strategies.oneshot.strategy.OneShotStrategy.state`).

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> table = expected_table(sp, {d.label: np.arange(d.size, dtype=float) for d in sp.decisions})
>>> table.shape
(6, 5)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from nasir.backends.torch.batches import DeviceLoader, device_loader
from nasir.backends.torch.data import digits_splits
from nasir.backends.torch.device import resolve_device
from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.oneshot.latency_model import (
    DEFAULT_LUT_PATH,
    LatencyCalibration,
    additive_latency,
    calibrate_rows,
    decision_latency,
    expected_table,
    latency_function,
    tvm_measure_us,
)

__all__ = ["DEFAULT_LUT_PATH", "ZERO_OPTIONS", "LatencyCalibration", "OneShotResult",
           "SearchData", "SearchSettings", "additive_latency", "calibrate_rows", "cycle",
           "decision_latency", "derive_from_probs", "expected_table", "is_connected",
           "latency_function", "on_device", "resolve_variant", "search_data",
           "set_arch_grads", "tvm_measure_us", "weight_optimizer"]


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
class SearchSettings:
    """Base of a search's settings: a frozen dataclass that checks itself when made
    (subclasses: ``__post_init__``) and prints as JSON."""

    def to_json(self) -> dict[str, Any]:
        """Every setting, JSON-able (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def changed_from(self, other: SearchSettings) -> dict[str, Any]:
        """The settings whose value differs from ``other``'s (JSON form)."""
        mine, theirs = self.to_json(), other.to_json()
        return {k: v for k, v in mine.items() if theirs.get(k) != v}


def resolve_variant(variants: Mapping[str, SearchSettings], variant: str,
                    overrides: Mapping[str, Any], what: str) -> SearchSettings:
    """The settings of ``variant`` with ``overrides`` applied (checked again); unknown
    variants and options are :class:`~nasir.errors.SpecError` naming the valid ones."""
    if variant not in variants:
        raise SpecError(f"unknown {what} variant {variant!r}",
                        hint=f"use one of {', '.join(variants)}")
    base = variants[variant]
    names = [f.name for f in dataclasses.fields(base)]
    bad = sorted(set(overrides) - set(names))
    if bad:
        raise SpecError(f"unknown {what} option(s): {', '.join(bad)}",
                        hint=f"settings: {', '.join(names)}")
    return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class SearchData:
    """Loaders of a one-shot search: ``train_w`` trains weights, ``train_a`` the
    architecture (DARTS' split of the training set in halves), ``val`` is held out."""

    train_w: Any
    train_a: Any
    val: Any


def search_data(batch_size: int = 64, seed: int = 0, fraction: float = 1.0,
                device: str | torch.device = "cpu", splits: Any = None) -> SearchData:
    """``splits`` (a :class:`~nasir.backends.torch.data.DataSplits`, the run's data;
    digits when ``None``): the training split cut in two halves (weights / architecture),
    plus val, held and batched on ``device``
    (:func:`~nasir.backends.torch.batches.device_loader`; the two halves share one seeded
    order generator, as their DataLoaders did)."""
    dev = resolve_device(device)
    s = splits if splits is not None else digits_splits()
    n = len(s.train)
    idx = np.random.default_rng(seed).permutation(n)[:max(2, round(n * fraction))]
    half = len(idx) // 2
    g = torch.Generator().manual_seed(seed)
    w = device_loader(Subset(s.train, sorted(idx[:half].tolist())), batch_size,
                      shuffle=True, generator=g, device=dev)
    a = device_loader(Subset(s.train, sorted(idx[half:].tolist())), batch_size,
                      shuffle=True, generator=g, device=dev)
    v = device_loader(s.val, 256, shuffle=False, generator=None, device=dev)
    return SearchData(w, a, v)


def on_device(data: SearchData, device: torch.device) -> SearchData:
    """``data`` whose batches arrive on ``device`` (your own loaders are wrapped)."""
    def move(loader: Any) -> Any:
        if device.type == "cpu" or getattr(loader, "device", None) == device:
            return loader
        return DeviceLoader(loader, device)

    return SearchData(move(data.train_w), move(data.train_a), move(data.val))


def cycle(loader: Any) -> Iterator[Any]:
    """Endless iteration over a loader (reshuffled each pass)."""
    while True:
        yield from loader



def set_arch_grads(net: Any, loss: torch.Tensor) -> None:
    """Set the architecture logits' ``.grad`` to ``∂loss/∂α`` and nothing else: autograd
    then skips every weight gradient of an architecture step (they would be thrown away;
    the weight step computes its own)."""
    arch = net.arch_parameters()
    for p, g in zip(arch, torch.autograd.grad(loss, arch, allow_unused=True)):
        p.grad = torch.zeros_like(p) if g is None else g


@contextlib.contextmanager
def frozen_logits(net: Any) -> Iterator[None]:
    """Within: the architecture logits do not require grad, so a weight step's backward
    skips their gradients (and the mixing weights' products it would need) — the weight
    gradients are the same. Mixed (darts/gumbel) and hard-Gumbel supernets sample the same
    way either way; a two-path binarized supernet would not (it samples pairs only when
    the logits train)."""
    arch = net.arch_parameters()
    before = [p.requires_grad for p in arch]
    for p in arch:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(arch, before):
            p.requires_grad_(r)


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


ZERO_OPTIONS = ("none", "zero")


def _is_zero_option(v: Any) -> bool:
    return isinstance(v, str) and v in ZERO_OPTIONS


def is_connected(space: Space, assignment: Mapping[str, Any]) -> bool:
    """Whether the network of ``assignment`` still carries its input to its output
    (:func:`nasir.passes.connectivity.is_connected` of its graph).

    ``zero`` ops (a cell's ``none`` edge) output zeros whatever they read, so a path through
    one carries nothing; a derived cell whose every input-to-output path crosses one is
    disconnected (its output is a constant).

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    >>> is_connected(sp, {d.label: "none" for d in sp.decisions})
    False
    >>> is_connected(sp, sp.reference("resnet"))
    True
    """
    from nasir.passes.connectivity import is_connected as graph_connected

    return graph_connected(space.instantiate(space.check(assignment)))


def derive_from_probs(space: Space, probs: Mapping[str, np.ndarray],
                      fixed: Mapping[str, Any] | None = None, none: str = "connect"
                      ) -> dict[str, Any]:
    """A discrete assignment from per-decision option probabilities.

    ``none`` says what to do with ``none``/``zero`` options:

    ``keep``     plain argmax (a derived cell may come out disconnected);
    ``exclude``  argmax over the other options (DARTS' derivation);
    ``connect``  argmax, then, while the network is disconnected (:func:`is_connected`),
                 switch the ``none`` decision whose best other option loses the least
                 probability (the first single switch that reconnects, else the cheapest).

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    >>> p = {d.label: np.array([0.6, 0.1, 0.1, 0.1, 0.1]) for d in sp.decisions}
    >>> p["edge_0_3"] = np.array([0.5, 0.4, 0.0, 0.0, 0.1])
    >>> a = derive_from_probs(sp, p)
    >>> [k for k, v in a.items() if v != "none"]
    ['edge_0_3']
    >>> a["edge_0_3"]
    'skip_connect'
    """
    if none not in ("keep", "exclude", "connect"):
        raise SpecError(f"unknown none policy {none!r}", where="derive_from_probs",
                        hint="use 'keep', 'exclude' or 'connect'")
    out = dict(fixed or {})
    labels = [d.label for d in space.decisions if d.label in probs]
    opts = {d.label: d.options for d in space.decisions}

    def best(lb: str, drop_zero: bool) -> int:
        p = np.asarray(probs[lb], dtype=np.float64).copy()
        if drop_zero and any(not _is_zero_option(o) for o in opts[lb]):
            for i, o in enumerate(opts[lb]):
                if _is_zero_option(o):
                    p[i] = -np.inf
        return int(np.argmax(p))

    for lb in labels:
        out[lb] = opts[lb][best(lb, none == "exclude")]
    if none == "connect" and not is_connected(space, out):
        _reconnect(space, probs, labels, opts, out, lambda lb: best(lb, True))
    return out


def _reconnect(space: Space, probs: Mapping[str, np.ndarray], labels: list[str],
               opts: Mapping[str, tuple], out: dict[str, Any], best: Callable[[str], int]
               ) -> None:
    """Switch ``none`` decisions of ``out`` (in place) until it is connected."""
    while True:
        cands = []
        for lb in labels:
            j = best(lb)
            if _is_zero_option(out[lb]) and not _is_zero_option(opts[lb][j]):
                p = np.asarray(probs[lb], dtype=np.float64)
                i = opts[lb].index(out[lb])
                loss = float(np.log(p[i] + 1e-12) - np.log(p[j] + 1e-12))
                cands.append((loss, lb, opts[lb][j]))
        if not cands:
            return  # nothing left to switch: every path is pinned through zeros
        cands.sort(key=lambda c: c[0])
        for _, lb, v in cands:
            if is_connected(space, out | {lb: v}):
                out[lb] = v
                return
        out[cands[0][1]] = cands[0][2]
        if is_connected(space, out):
            return
