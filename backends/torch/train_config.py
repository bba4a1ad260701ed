"""The settings and the outcome of a training run: :class:`TrainConfig` (frozen, checked
when made), :class:`LearningCurveStopper` (early stopping on the validation curve) and
:class:`TrainResult`. :mod:`~nasir.backends.torch.estimator` runs them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from nasir.backends.torch.device import check_amp, check_device_spec
from nasir.backends.torch.droppath import ScheduledDropPath
from nasir.errors import BackendError

__all__ = ["LearningCurveStopper", "TrainConfig", "TrainResult"]

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
    """Settings of a training run (frozen, checked when made).

    Where and how it runs:

    ``device``
        ``cpu`` (the default), ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (CUDA when
        present, else MPS, else CPU). A device this machine lacks is an error when the
        estimator is made. The runtime passes the experiment's ``device`` (a pool worker's
        own, ``NASIR_WORKER_DEVICE``, wins).
    ``amp``
        mixed precision: ``auto`` (bf16 autocast on a CUDA GPU that supports it, fp16 with a
        gradient scaler on one that does not, off on CPU and MPS), ``bf16``, ``fp16`` or
        ``off``. Weights and optimizer state stay fp32.
    ``channels_last``
        model and 4-d batches in channels-last memory layout (faster convolutions on
        tensor-core GPUs; off by default).
    ``compile``
        ``torch.compile`` the model (off: the compile time often exceeds a short trial's
        training; measure before turning it on).
    ``deterministic``
        deterministic kernels during training (``torch.use_deterministic_algorithms`` in
        warn-only mode, cuDNN deterministic and not autotuned; on CUDA
        ``CUBLAS_WORKSPACE_CONFIG``). Off, a seeded run is exactly repeatable on the CPU; on a
        GPU some kernels (atomic adds in backward) may still differ in the last bits.
    ``num_workers``
        DataLoader worker processes for data not held on the device (``None``: none on CPU
        or in a pool worker, up to 4 on CUDA; pinned memory on CUDA).
    ``seed``
        seeds the initial weights (made on the CPU, then moved, so the same on every device),
        the data subset and batch order, augmentation and dropout / drop-path.
    """

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
    device: str = "cpu"
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    num_workers: int | None = None

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
        self._check_device_options()

    def _check_device_options(self) -> None:
        check_device_spec(self.device)
        check_amp(self.amp)
        if self.num_workers is not None and (not isinstance(self.num_workers, int)
                                             or self.num_workers < 0):
            raise BackendError(f"num_workers must be an int >= 0 or None, got "
                               f"{self.num_workers!r}")
        for name in ("channels_last", "compile", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise BackendError(f"{name} must be true or false, got "
                                   f"{getattr(self, name)!r}")


@dataclass
class TrainResult:
    """Outcome of one trial. ``ok=False`` carries ``reason`` (diverged, out of memory,
    timeout, memory budget, ``infeasible:`` above the device's free memory, invalid); the
    metrics then describe what ran before. ``device`` and ``amp`` say where and in which
    precision it ran (``off``: fp32)."""

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
    device: str = "cpu"
    amp: str = "off"

    @property
    def infeasible(self) -> bool:
        """Whether the candidate was not run because it cannot fit the device."""
        return bool(self.reason and self.reason.startswith("infeasible"))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dict(self.__dict__)
