"""Training estimator: train a candidate on real data and report how good it is.

:class:`TrainingEstimator` lowers a concrete graph, trains it on the built-in digits split
(or any ``torch.utils.data`` dataset / DataLoader pair) and returns a :class:`TrainResult`:
validation accuracy, loss curve, train time, params and MACs. Low-fidelity knobs: epochs,
data fraction, resolution, channel width multiplier. Runs are deterministic for a seed.
Training batches go through the data's ``augment`` (if any) with a generator seeded by
the run's seed; validation and test batches are never augmented.

Training runs where :attr:`TrainConfig.device` says (model and batches moved there;
in-memory image sets held and batched on the device, :mod:`~nasir.backends.torch.batches`),
under autocast when :attr:`TrainConfig.amp` asks, and the result says which device and
precision ran (``device``, ``amp``). Before training, the predicted training memory is
checked against the device's free memory: a candidate that cannot fit is not run
(``reason`` starts ``infeasible:``).

A bad candidate never raises: a diverging loss (NaN / inf), running out of memory (host or
GPU: the trial's model, optimizer and the allocator's cache are released, so the next trial
starts clean), a timeout, a predicted memory above the budget or above the device's free
memory, or a graph the knobs break ends the trial with ``ok=False`` and the reason. Bad
*settings* (a negative epoch count, a device this machine lacks) raise ``BackendError``
when the estimator is made.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> est = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.2, seed=0))
>>> r = est.estimate(sp.instantiate(sp.reference("resnet")))
>>> r.ok, len(r.loss_curve), 0.0 <= r.val_accuracy <= 1.0, r.device, r.amp
(True, 1, True, 'cpu', 'off')
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.batches import device_loader
from nasir.backends.torch.data import (
    DataSplits,
    digits_splits,
    resize_batch,
    subset,
)
from nasir.backends.torch.device import (
    amp_name,
    autocast,
    determinism,
    grad_scaler,
    prepare_module,
    release_memory,
    resolve_amp,
    resolve_device,
    to_memory_format,
)
from nasir.backends.torch.device import (
    free_memory as device_free_memory,
)
from nasir.backends.torch.droppath import ScheduledDropPath
from nasir.backends.torch.memory import MemoryEstimate, predict_training_memory
from nasir.backends.torch.train_config import (
    LearningCurveStopper,
    TrainConfig,
    TrainResult,
)
from nasir.backends.torch.train_support import (
    _attach_aux,
    _check_finite,
    _failure_reason,
    _Precision,
    _Timeout,
    device_bytes,
)
from nasir.errors import BackendError
from nasir.graph import Graph

__all__ = ["LearningCurveStopper", "TrainConfig", "TrainResult", "TrainingEstimator"]


class TrainingEstimator:
    """Train candidates and report metrics; see the module docstring.

    Args:
        config: a :class:`TrainConfig` (keyword overrides are applied on top).
        data: ``None`` for the built-in digits split, a :class:`DataSplits`, or a
            ``(train, val)`` / ``(train, val, test)`` tuple of datasets or DataLoaders.
        free_memory: ``device -> bytes or None``, the device's free memory before a trial
            (default :func:`~nasir.backends.torch.device.free_memory`: CUDA's, ``None`` on
            the CPU, which is not checked).

    Raises:
        BackendError: a setting is wrong, or the device is not on this machine.
    """

    def __init__(self, config: TrainConfig | None = None, data: Any = None, *,
                 free_memory: Callable[[torch.device], int | None] | None = None,
                 **overrides: Any):
        self.config = replace(config or TrainConfig(), **overrides)
        resolve_amp(self.config.amp, resolve_device(self.config.device))  # fail here, now
        self.data = self._splits(data)
        self.free_memory = free_memory or device_free_memory
        #: best validation accuracy so far (used by early stopping)
        self.best: float | None = None
        #: the trained state dict (CPU tensors) of the last ``estimate(..., keep_state=True)``
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
        device = resolve_device(cfg.device)
        dtype = resolve_amp(cfg.amp, device)
        result = TrainResult(ok=False, device=str(device), amp=amp_name(dtype))
        self.last_state = None
        try:
            g = self._prepare(graph)
            from nasir.passes import analyze

            facts = analyze(g)
            result.params, result.macs = facts["params"], facts["macs"]
            mem = predict_training_memory(g, cfg.batch_size, "adam" if cfg.optimizer == "adam"
                                          else "momentum")
            result.predicted_memory_bytes = mem.total
            result.reason = self._fit_reason(mem, device, dtype)
            if result.reason is None:
                prec = _Precision(device, dtype, grad_scaler(device, dtype))
                self._train(g, result, self.best if best is None else best, init,
                            keep_state, prec)
        except Exception as e:  # a bad candidate must never crash the caller
            result.reason = _failure_reason(e)
        if result.reason is not None and result.reason.startswith("out of memory"):
            release_memory(device)  # the failed step's tensors are unreachable by now
        if result.ok and (self.best is None or result.val_accuracy > self.best):
            self.best = result.val_accuracy
        return result

    def _fit_reason(self, mem: MemoryEstimate, device: torch.device,
                    dtype: torch.dtype | None) -> str | None:
        """Why a candidate with predicted memory ``mem`` is not run (None: it is)."""
        budget = self.config.memory_budget_bytes
        if budget is not None and mem.total > budget:
            return f"out of memory budget: predicted {mem.total:,} B > {budget:,} B ({mem})"
        free = self.free_memory(device)
        need = device_bytes(mem, dtype)
        if free is not None and need > free:
            return (f"infeasible: predicted {need:,} B > free {free:,} B on {device} "
                    f"({amp_name(dtype)}; fp32 {mem})")
        return None

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

    def _loaders(self, device: torch.device | None = None) -> tuple[Any, Any, Any]:
        """Training, validation and test batches on ``device`` (default: the config's)."""
        cfg, d = self.config, self.data
        device = resolve_device(cfg.device) if device is None else device
        train = d.train
        if cfg.data_fraction < 1.0 and hasattr(train, "__getitem__"):
            train = subset(train, cfg.data_fraction, cfg.seed)

        def load(data: Any, batch_size: int, shuffle: bool) -> Any:
            return device_loader(data, batch_size, shuffle=shuffle,
                                 generator=torch.Generator().manual_seed(cfg.seed),
                                 device=device, num_workers=cfg.num_workers)

        return (load(train, cfg.batch_size, True), load(d.val, 256, False),
                load(d.test, 256, False) if d.test is not None else None)

    def _build(self, g: Graph) -> nn.Module:
        from nasir.backends.torch.lowering import lower

        cfg = self.config
        m = lower(g, seed=cfg.seed, drop_path=cfg.drop_path > 0)
        if cfg.aux_weight > 0:
            m = _attach_aux(m, g, g.output.shape[0])
        return m

    def _train(self, g: Graph, result: TrainResult, best: float | None,
               init: Mapping[str, torch.Tensor] | None = None, keep_state: bool = False,
               prec: _Precision | None = None) -> None:
        from nasir.backends.torch.lowering import inherit_weights

        cfg = self.config
        prec = prec or _Precision(torch.device("cpu"), None)
        t0 = time.perf_counter()
        cuda = [prec.device.index or 0] if prec.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), determinism(cfg.deterministic, prec.device):
            torch.manual_seed(cfg.seed)
            model: Any = self._build(g)  # made on the CPU: the same weights on every device
            if init is not None:
                result.inherited = inherit_weights(model, init)
            prepare_module(model, prec.device, channels_last=cfg.channels_last)
            run = torch.compile(model) if cfg.compile else model
            opt: Any = self._optimizer(model)
            try:
                self._epochs(model, run, opt, result, best, prec, t0)
                if keep_state:
                    self.last_state = {k: v.detach().to("cpu", copy=True) for k, v in
                                       model.state_dict().items()}
            finally:  # drop the references now: a failed trial's frames outlive it
                model = run = opt = None
        result.train_time_s = time.perf_counter() - t0
        result.ok = True

    def _epochs(self, model: nn.Module, run: Any, opt: torch.optim.Optimizer,
                result: TrainResult, best: float | None, prec: _Precision, t0: float) -> None:
        cfg = self.config
        train, val, test = self._loaders(prec.device)
        augment = self.data.augment
        # its own generator: augmenting leaves the model's random streams unchanged
        aug_gen = torch.Generator().manual_seed(cfg.seed)
        sched = ScheduledDropPath(cfg.drop_path)
        # float64 on the device: the same sums as Python floats, without a sync per step
        acc = torch.float32 if prec.device.type == "mps" else torch.float64
        for epoch in range(cfg.epochs):
            sched.update(model, epoch, cfg.epochs)
            model.train()
            total = torch.zeros((), dtype=acc, device=prec.device)
            count = 0
            for step, (x, y) in enumerate(train):
                if augment is not None:
                    x = augment(x, aug_gen)
                loss = self._step(run, opt, x, y, prec)
                total += loss.to(acc) * len(y)
                count += len(y)
                if step % 32 == 31:
                    _check_finite(total)
                if cfg.timeout_s is not None and time.perf_counter() - t0 > cfg.timeout_s:
                    raise _Timeout(f"training took over {cfg.timeout_s:g} s "
                                   f"(epoch {epoch + 1} of {cfg.epochs})")
            _check_finite(total)
            result.loss_curve.append(float(total) / max(count, 1.0))
            result.val_curve.append(self._accuracy(run, val, prec))
            result.val_accuracy = result.val_curve[-1]
            result.epochs_run = epoch + 1
            result.train_time_s = time.perf_counter() - t0
            stopper = cfg.early_stopping
            if stopper is not None and stopper.should_stop(result.val_curve, cfg.epochs, best):
                result.stopped_early = True
                break
        if cfg.test and test is not None:
            result.test_accuracy = self._accuracy(run, test, prec)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, prec: _Precision | None = None) -> torch.Tensor:
        """One training step; returns the (detached, device) loss."""
        cfg = self.config
        prec = prec or _Precision(x.device, None)
        x = to_memory_format(resize_batch(x, cfg.resolution), cfg.channels_last)
        opt.zero_grad(set_to_none=True)
        with autocast(prec.device, prec.dtype):
            out = model(x)
            if isinstance(out, tuple):
                loss = F.cross_entropy(out[0], y) + cfg.aux_weight * F.cross_entropy(out[1], y)
            else:
                loss = F.cross_entropy(out, y)
        if prec.scaler is not None:
            prec.scaler.scale(loss).backward()
            prec.scaler.step(opt)
            prec.scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach()

    @torch.no_grad()
    def _accuracy(self, model: nn.Module, loader: Any, prec: _Precision | None = None
                  ) -> float:
        cfg = self.config
        model.eval()
        right: Any = 0
        total = 0
        for x, y in loader:
            x = to_memory_format(resize_batch(x, cfg.resolution), cfg.channels_last)
            with autocast(prec.device, prec.dtype) if prec else contextlib.nullcontext():
                out = model(x)
            if isinstance(out, tuple):
                out = out[0]
            right = right + (out.argmax(1) == y).sum()
            total += len(y)
        return int(right) / max(total, 1)
