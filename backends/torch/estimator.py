"""Training estimator: train a candidate on real data and report how good it is.

:class:`TrainingEstimator` lowers a concrete graph, trains it on the built-in digits split
(or any ``torch.utils.data`` dataset / DataLoader pair) and returns a :class:`TrainResult`:
validation accuracy, loss curve, train time, params and MACs. Low-fidelity knobs: epochs,
data fraction, resolution, channel width multiplier. Runs are deterministic for a seed.
Training batches go through the data's ``augment`` (if any) with a generator seeded by
the run's seed; validation and test batches are never augmented.

A bad candidate never raises: a diverging loss (NaN / inf), running out of memory, a
timeout, a predicted memory above the budget, or a graph the knobs break ends the trial
with ``ok=False`` and the reason. Bad *settings* (a negative epoch count) raise
``BackendError`` when the estimator is made.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> est = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.2, seed=0))
>>> r = est.estimate(sp.instantiate(sp.reference("resnet")))
>>> r.ok, len(r.loss_curve), 0.0 <= r.val_accuracy <= 1.0
(True, 1, True)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.data import (
    DataSplits,
    digits_splits,
    make_loader,
    resize_batch,
    subset,
)
from nasir.backends.torch.droppath import ScheduledDropPath
from nasir.backends.torch.memory import predict_training_memory
from nasir.errors import BackendError, NasirError
from nasir.graph import Graph

__all__ = ["LearningCurveStopper", "TrainConfig", "TrainResult", "TrainingEstimator"]

_OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LearningCurveStopper:
    """Stop a trial whose validation curve cannot reach the best accuracy seen so far.

    After ``min_epochs`` epochs the bound on the final accuracy is the current accuracy
    plus the largest per-epoch gain seen so far times the epochs left (an optimistic
    linear extrapolation, capped at 1). When the bound is below ``best - margin`` the trial
    stops.

    >>> s = LearningCurveStopper(min_epochs=2)
    >>> s.should_stop([0.10, 0.12], epochs=5, best=0.9)
    True
    >>> s.should_stop([0.10, 0.50], epochs=5, best=0.9)
    False
    """

    min_epochs: int = 2
    margin: float = 0.0

    def bound(self, curve: list[float], epochs: int) -> float:
        """Optimistic final accuracy of a curve of ``len(curve)`` of ``epochs`` epochs."""
        if not curve:
            return 1.0
        gains = [b - a for a, b in itertools.pairwise(curve)] or [curve[0]]
        return min(1.0, curve[-1] + max(0.0, max(gains)) * (epochs - len(curve)))

    def should_stop(self, curve: list[float], epochs: int, best: float | None) -> bool:
        """Whether to stop now."""
        if best is None or len(curve) < self.min_epochs or len(curve) >= epochs:
            return False
        return self.bound(curve, epochs) < best - self.margin


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (frozen, checked when made)."""

    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    data_fraction: float = 1.0
    resolution: int | None = None
    width_multiplier: float = 1.0
    seed: int = 0
    timeout_s: float | None = None
    memory_budget_bytes: int | None = None
    drop_path: float = 0.0
    aux_weight: float = 0.0
    early_stopping: LearningCurveStopper | None = None
    test: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise BackendError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BackendError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise BackendError(f"unknown optimizer {self.optimizer!r}",
                               hint=f"use one of {', '.join(_OPTIMIZERS)}")
        if not 0.0 < self.data_fraction <= 1.0:
            raise BackendError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        if self.resolution is not None and self.resolution < 1:
            raise BackendError(f"resolution must be >= 1, got {self.resolution}")
        if not self.width_multiplier > 0:
            raise BackendError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        if not self.lr > 0:
            raise BackendError(f"lr must be > 0, got {self.lr}")
        if self.aux_weight < 0:
            raise BackendError(f"aux_weight must be >= 0, got {self.aux_weight}")
        ScheduledDropPath(self.drop_path)


@dataclass
class TrainResult:
    """Outcome of one trial. ``ok=False`` carries ``reason`` (diverged, out of memory,
    timeout, memory budget, invalid); the metrics then describe what ran before."""

    ok: bool
    reason: str | None = None
    val_accuracy: float = 0.0
    test_accuracy: float | None = None
    loss_curve: list[float] = field(default_factory=list)
    val_curve: list[float] = field(default_factory=list)
    train_time_s: float = 0.0
    params: int = 0
    macs: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    predicted_memory_bytes: int = 0
    #: tensors taken from ``estimate(..., init=...)`` (0: trained from scratch)
    inherited: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dict(self.__dict__)


class _Diverged(Exception):
    pass


class _Timeout(Exception):
    pass


class _AuxHead(nn.Module):
    """DARTS-style auxiliary classifier on an intermediate feature map."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Conv2d(channels, 128, 1, bias=False),
                                      nn.BatchNorm2d(128), nn.ReLU())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _WithAux(nn.Module):
    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.aux = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, feat = self.net(x)
        return out, self.aux(feat)


def _attach_aux(module: Any, g: Graph, num_classes: int) -> nn.Module:
    """Expose the feature map about two thirds into the network as a second output."""
    from nasir.backends.torch.lowering import _fx_name, prepare

    e = prepare(g)
    nodes = e.nodes()
    by_name = {n.name: n for n in module.graph.nodes}
    cands = [n for n in nodes[: max(1, 2 * len(nodes) // 3)]
             if n.type is not None and n.type.rank == 3 and _fx_name(n) in by_name]
    if not cands:
        raise BackendError("no feature map for an auxiliary head",
                           hint="set aux_weight=0 for networks without conv layers")
    feat = cands[-1]
    out = next(n for n in module.graph.nodes if n.op == "output")
    out.args = ((out.args[0], by_name[_fx_name(feat)]),)
    module.recompile()
    return _WithAux(module, _AuxHead(feat.type.shape[0], num_classes))  # type: ignore[union-attr]


class TrainingEstimator:
    """Train candidates and report metrics; see the module docstring.

    Args:
        config: a :class:`TrainConfig` (keyword overrides are applied on top).
        data: ``None`` for the built-in digits split, a :class:`DataSplits`, or a
            ``(train, val)`` / ``(train, val, test)`` tuple of datasets or DataLoaders.
    """

    def __init__(self, config: TrainConfig | None = None, data: Any = None, **overrides: Any):
        self.config = replace(config or TrainConfig(), **overrides)
        self.data = self._splits(data)
        #: best validation accuracy so far (used by early stopping)
        self.best: float | None = None
        #: the trained state dict of the last ``estimate(..., keep_state=True)``
        self.last_state: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _splits(data: Any) -> DataSplits:
        if data is None:
            return digits_splits(seed=0)
        if isinstance(data, DataSplits):
            return data
        if isinstance(data, tuple) and len(data) in (2, 3):
            test = data[2] if len(data) == 3 else None
            return DataSplits(data[0], data[1], test, 0, ())
        raise BackendError(f"cannot use {type(data).__name__} as training data",
                           hint="pass None (digits), DataSplits, or (train, val[, test]) "
                                "datasets or DataLoaders")

    # -- public ------------------------------------------------------------------------
    def estimate(self, graph: Graph, *, best: float | None = None,
                 init: Mapping[str, torch.Tensor] | None = None,
                 keep_state: bool = False) -> TrainResult:
        """Train ``graph`` and return its :class:`TrainResult` (never raises on the graph).

        ``init``: weights to start from instead of a fresh initialisation (a state dict
        of a related network, e.g. the wider one NetAdapt pruned this from): every tensor
        whose name matches and whose shape is no larger in any dimension takes the
        leading slice (first filters / input channels) of it
        (:func:`~nasir.backends.torch.lowering.inherit_weights`). ``keep_state``: keep
        the trained state dict in :attr:`last_state` (``None`` otherwise)."""
        cfg = self.config
        result = TrainResult(ok=False)
        self.last_state = None
        try:
            g = self._prepare(graph)
            from nasir.passes import analyze

            facts = analyze(g)
            result.params, result.macs = facts["params"], facts["macs"]
            mem = predict_training_memory(g, cfg.batch_size, "adam" if cfg.optimizer == "adam"
                                          else "momentum")
            result.predicted_memory_bytes = mem.total
            if cfg.memory_budget_bytes is not None and mem.total > cfg.memory_budget_bytes:
                result.reason = (f"out of memory budget: predicted {mem.total:,} B > "
                                 f"{cfg.memory_budget_bytes:,} B ({mem})")
                return result
            self._train(g, result, self.best if best is None else best, init, keep_state)
        except _Diverged as e:
            result.reason = f"diverged: {e}"
        except _Timeout as e:
            result.reason = f"timeout: {e}"
        except (torch.OutOfMemoryError, MemoryError) as e:
            result.reason = f"out of memory: {e}".strip()
        except RuntimeError as e:
            msg = str(e)
            if "memory" in msg.lower() and ("alloc" in msg.lower() or "out of" in msg.lower()):
                result.reason = f"out of memory: {msg.splitlines()[0]}"
            else:
                result.reason = f"runtime error: {msg.splitlines()[0] if msg else type(e)}"
        except NasirError as e:
            result.reason = f"invalid candidate: {e.message}"
        except Exception as e:  # a bad candidate must never crash the caller
            result.reason = f"{type(e).__name__}: {e}"
        if result.ok and (self.best is None or result.val_accuracy > self.best):
            self.best = result.val_accuracy
        return result

    # -- steps -------------------------------------------------------------------------
    def _prepare(self, graph: Graph) -> Graph:
        from nasir.backends.torch.transforms import scale_width, set_resolution

        cfg = self.config
        g = graph
        if cfg.resolution is not None:
            g = set_resolution(g, cfg.resolution)
        if cfg.width_multiplier != 1.0:
            g = scale_width(g, cfg.width_multiplier)
        return g

    def _loaders(self) -> tuple[Any, Any, Any]:
        cfg, d = self.config, self.data
        train = d.train
        if cfg.data_fraction < 1.0 and hasattr(train, "__getitem__"):
            train = subset(train, cfg.data_fraction, cfg.seed)
        return (make_loader(train, cfg.batch_size, True, cfg.seed),
                make_loader(d.val, 256, False, cfg.seed),
                make_loader(d.test, 256, False, cfg.seed) if d.test is not None else None)

    def _build(self, g: Graph) -> nn.Module:
        from nasir.backends.torch.lowering import lower

        cfg = self.config
        m = lower(g, seed=cfg.seed, drop_path=cfg.drop_path > 0)
        if cfg.aux_weight > 0:
            m = _attach_aux(m, g, g.output.type.shape[0])  # type: ignore[union-attr]
        return m

    def _train(self, g: Graph, result: TrainResult, best: float | None,
               init: Mapping[str, torch.Tensor] | None = None, keep_state: bool = False
               ) -> None:
        from nasir.backends.torch.lowering import inherit_weights

        cfg = self.config
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = self._build(g)
            if init is not None:
                result.inherited = inherit_weights(model, init)
            train, val, test = self._loaders()
            augment = self.data.augment
            # its own generator: augmenting leaves the model's random streams unchanged
            aug_gen = torch.Generator().manual_seed(cfg.seed)
            opt = self._optimizer(model)
            sched = ScheduledDropPath(cfg.drop_path)
            for epoch in range(cfg.epochs):
                sched.update(model, epoch, cfg.epochs)
                model.train()
                total = count = 0.0
                for x, y in train:
                    if augment is not None:
                        x = augment(x, aug_gen)
                    loss = self._step(model, opt, x, y)
                    total += loss * len(y)
                    count += len(y)
                    if cfg.timeout_s is not None and time.perf_counter() - t0 > cfg.timeout_s:
                        raise _Timeout(f"training took over {cfg.timeout_s:g} s "
                                       f"(epoch {epoch + 1} of {cfg.epochs})")
                result.loss_curve.append(total / max(count, 1.0))
                result.val_curve.append(self._accuracy(model, val))
                result.val_accuracy = result.val_curve[-1]
                result.epochs_run = epoch + 1
                result.train_time_s = time.perf_counter() - t0
                stopper = cfg.early_stopping
                if stopper is not None and stopper.should_stop(result.val_curve, cfg.epochs,
                                                               best):
                    result.stopped_early = True
                    break
            if cfg.test and test is not None:
                result.test_accuracy = self._accuracy(model, test)
            if keep_state:
                self.last_state = {k: v.detach().clone() for k, v in
                                   model.state_dict().items()}
        result.train_time_s = time.perf_counter() - t0
        result.ok = True

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> float:
        cfg = self.config
        x = resize_batch(x, cfg.resolution)
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if isinstance(out, tuple):
            loss = F.cross_entropy(out[0], y) + cfg.aux_weight * F.cross_entropy(out[1], y)
        else:
            loss = F.cross_entropy(out, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise _Diverged(f"training loss became {value}")
        loss.backward()
        opt.step()
        return value

    @torch.no_grad()
    def _accuracy(self, model: nn.Module, loader: Any) -> float:
        model.eval()
        right = total = 0
        for x, y in loader:
            out = model(resize_batch(x, self.config.resolution))
            if isinstance(out, tuple):
                out = out[0]
            right += int((out.argmax(1) == y).sum())
            total += len(y)
        return right / max(total, 1)
