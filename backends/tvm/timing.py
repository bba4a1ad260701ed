"""What a latency measurement is and how it is timed: :class:`MeasureConfig` (repeats,
warm-up, the noise policy), :class:`LatencyResult` and :func:`run_timing` (median over
repeats, coefficient of variation, noisy runs retried) — shared by the local measurement
(:mod:`.measure`) and the remote one (:mod:`.rpc`), so that rpc needs nothing of measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasir.errors import BackendError

__all__ = ["LatencyResult", "MeasureConfig", "retry_timing", "run_timing"]


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure: batch, repeats after ``warmup`` runs, and the noise policy.

    Each repeat runs the network often enough to last ``min_repeat_ms``; a measurement
    whose coefficient of variation exceeds ``cv_threshold`` is repeated up to
    ``max_retries`` times (the least noisy one is kept) and flagged if still noisy.
    ``settle_s`` > 0 (this machine's CPU only): time only when the machine runs at its full
    speed, waiting up to that many seconds for it, with ``speed_tol`` the slowdown of a
    reference kernel still counted as full speed (:mod:`.machine_speed`).

    >>> MeasureConfig(repeats=0)
    Traceback (most recent call last):
    ...
    nasir.errors.BackendError: MeasureConfig.repeats must be >= 1, got 0
    """

    batch: int = 1
    repeats: int = 15
    warmup: int = 3
    min_repeat_ms: float = 10.0
    cv_threshold: float = 0.10
    max_retries: int = 2
    tune_trials: int = 0
    trials_per_workload: int = 0
    settle_s: float = 0.0
    speed_tol: float = 0.25  # machine_speed.TOL

    def __post_init__(self) -> None:
        for name, lo in (("batch", 1), ("repeats", 1), ("warmup", 0), ("max_retries", 0),
                         ("tune_trials", 0), ("trials_per_workload", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise BackendError(f"MeasureConfig.{name} must be >= {lo}, got {v!r}")
        if not self.min_repeat_ms >= 0 or not self.cv_threshold > 0:
            raise BackendError("MeasureConfig.min_repeat_ms must be >= 0 and "
                               "cv_threshold > 0")
        if not self.settle_s >= 0 or not self.speed_tol > 0:
            raise BackendError("MeasureConfig.settle_s must be >= 0 and speed_tol > 0, got "
                               f"{self.settle_s!r} and {self.speed_tol!r}")


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement (or its failure). Times are per batch, in milliseconds."""

    status: str
    target: str
    input_shape: tuple[int, ...]
    batch: int
    median_ms: float | None = None
    cv: float | None = None
    times_ms: tuple[float, ...] = ()
    compile_s: float | None = None
    flagged: bool = False
    retries: int = 0
    reason: str | None = None
    remote: str | None = None
    cached: bool = False
    graph_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the measurement succeeded."""
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["times_ms"] = list(self.times_ms)
        return d


def _stats(times: list[float]) -> tuple[float, float]:
    arr = np.asarray(times, dtype=np.float64)
    mean = float(arr.mean())
    return float(np.median(arr)), (float(arr.std() / mean) if mean > 0 else 0.0)


def _time_vm(vm: Any, dev: Any, args: list[Any], cfg: MeasureConfig) -> list[float]:
    for _ in range(cfg.warmup):
        vm["main"](*args)
    dev.sync()
    fn = vm.time_evaluator("main", dev, number=1, repeat=cfg.repeats,
                           min_repeat_ms=round(cfg.min_repeat_ms))
    return [float(t) * 1e3 for t in fn(*args).results]


def run_timing(vm: Any, dev: Any, args: list[Any], cfg: MeasureConfig
               ) -> tuple[list[float], float, float, int, bool]:
    """Time ``vm["main"](*args)``: returns (times, median, cv, retries, flagged)."""
    return retry_timing(lambda: _time_vm(vm, dev, args, cfg), cfg)


def retry_timing(sample: Callable[[], list[float]], cfg: MeasureConfig
                 ) -> tuple[list[float], float, float, int, bool]:
    """``cfg``'s noise policy over ``sample`` (one call: the per-repeat times in ms):
    returns (times, median, cv, retries, flagged) of the least noisy of its tries."""
    times = sample()
    best = (times, *_stats(times))
    retries = 0
    while best[2] > cfg.cv_threshold and retries < cfg.max_retries:
        retries += 1
        times = sample()
        cand = (times, *_stats(times))
        if cand[2] < best[2]:
            best = cand
    return best[0], best[1], best[2], retries, best[2] > cfg.cv_threshold
