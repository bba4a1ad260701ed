"""Rewards for search strategies: accuracy, and MnasNet's multi-objective reward.

MnasNet (Tan et al., CVPR 2019) maximises ``ACC(m) · (LAT(m) / T)^w`` with
``w = α`` if ``LAT(m) <= T`` else ``β``. The *soft* setting uses ``α = β = −0.07``; the
*hard* setting ``α = 0, β = −1`` (no bonus below the target, a steep penalty above it).
``latency`` may be any cost metric (``latency_ms``, ``macs``) with a target ``T`` in the
same unit.

A reward is described by a JSON-able spec so it can live in a strategy's options:
``"accuracy"``, ``{"kind": "accuracy", "power": 3}`` (Zoph & Le cube the accuracy) or
``{"kind": "mnasnet", "target": 80, "metric": "latency_ms", "mode": "soft"}``.

>>> r = make_reward({"kind": "mnasnet", "target": 80.0, "mode": "soft"})
>>> round(r({"accuracy": 0.75, "latency_ms": 160.0}), 4)
0.7145
>>> hard = make_reward({"kind": "mnasnet", "target": 80.0, "mode": "hard"})
>>> hard({"accuracy": 0.75, "latency_ms": 40.0}), hard({"accuracy": 0.75, "latency_ms": 160.0})
(0.75, 0.375)
>>> make_reward("accuracy")({"status": "failed"})
0.0

``{"kind": "objective", "metric": "latency_ms", "direction": "min"}`` makes any metric the
thing strategies maximise: the value itself for ``max``, its negation for ``min`` (failed
trials and missing values score ``-inf``).

>>> r = make_reward({"kind": "objective", "metric": "latency_ms", "direction": "min"})
>>> r({"latency_ms": 2.5}), r({"status": "failed"})
(-2.5, -inf)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasir.errors import SpecError
from nasir.metrics import finite  # re-exported: its old home

__all__ = ["MNASNET_MODES", "AccuracyReward", "MnasNetReward", "ObjectiveReward", "Reward",
           "finite", "make_reward"]

#: MnasNet's two settings: mode → (alpha, beta)
MNASNET_MODES: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}


def _ok(metrics: Mapping[str, Any], key: str) -> float | None:
    if metrics.get("status", "ok") != "ok":
        return None
    return finite(metrics.get(key))


@dataclass(frozen=True)
class Reward:
    """Base: a callable from a trial's metrics to a float (failed trials score ``worst``)."""

    worst: float = 0.0

    def __call__(self, metrics: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec that rebuilds this reward through :func:`make_reward`."""
        raise NotImplementedError


@dataclass(frozen=True)
class AccuracyReward(Reward):
    """``metrics[key] ** power`` (power 1: plain accuracy; Zoph & Le used 3)."""

    key: str = "accuracy"
    power: float = 1.0

    def __call__(self, metrics: Mapping[str, Any]) -> float:
        v = _ok(metrics, self.key)
        if v is None:
            return self.worst
        return float(max(v, 0.0) ** self.power)

    def spec(self) -> dict[str, Any]:
        return {"kind": "accuracy", "key": self.key, "power": self.power}


@dataclass(frozen=True)
class MnasNetReward(Reward):
    """``ACC · (LAT / T)^w``, ``w = alpha`` when ``LAT <= T`` else ``beta``."""

    target: float = 1.0
    metric: str = "latency_ms"
    alpha: float = -0.07
    beta: float = -0.07
    key: str = "accuracy"

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise SpecError(f"MnasNet reward needs a positive target, got {self.target}",
                            hint="give the latency (or MACs) target T in the metric's unit")

    def __call__(self, metrics: Mapping[str, Any]) -> float:
        acc = _ok(metrics, self.key)
        lat = _ok(metrics, self.metric)
        if acc is None or lat is None or lat <= 0:
            return self.worst
        w = self.alpha if lat <= self.target else self.beta
        return float(acc * (lat / self.target) ** w)

    def spec(self) -> dict[str, Any]:
        return {"kind": "mnasnet", "target": self.target, "metric": self.metric,
                "alpha": self.alpha, "beta": self.beta, "key": self.key}


@dataclass(frozen=True)
class ObjectiveReward(Reward):
    """``metrics[metric]`` for ``direction="max"``, ``-metrics[metric]`` for ``"min"``."""

    metric: str = "accuracy"
    direction: str = "max"
    worst: float = float("-inf")

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise SpecError(f"objective direction must be max or min, got {self.direction!r}",
                            hint=f"write {self.metric}:max or {self.metric}:min")

    def __call__(self, metrics: Mapping[str, Any]) -> float:
        v = _ok(metrics, self.metric)
        if v is None:
            return self.worst
        return float(v if self.direction == "max" else -v)

    def spec(self) -> dict[str, Any]:
        return {"kind": "objective", "metric": self.metric, "direction": self.direction}


def make_reward(spec: str | Mapping[str, Any] | Reward | None = None) -> Reward:
    """Build a reward from its spec (see the module docstring); ``None`` is accuracy."""
    if isinstance(spec, Reward):
        return spec
    if spec is None or spec == "accuracy":
        return AccuracyReward()
    if isinstance(spec, str):
        if spec in MNASNET_MODES:
            raise SpecError(f"the MnasNet reward {spec!r} needs a target",
                            hint=f'use {{"kind": "mnasnet", "mode": "{spec}", "target": T}}')
        raise SpecError(f"unknown reward {spec!r}", hint="use 'accuracy' or a mnasnet spec")
    if not isinstance(spec, Mapping):
        raise SpecError(f"a reward spec must be a string or a mapping, got {spec!r}")
    opts = dict(spec)
    kind = opts.pop("kind", "accuracy")
    try:
        if kind == "accuracy":
            return AccuracyReward(**opts)
        if kind == "mnasnet":
            mode = opts.pop("mode", None)
            if mode is not None:
                if mode not in MNASNET_MODES:
                    raise SpecError(f"unknown MnasNet mode {mode!r}",
                                    hint=f"use one of {', '.join(MNASNET_MODES)}")
                opts.setdefault("alpha", MNASNET_MODES[mode][0])
                opts.setdefault("beta", MNASNET_MODES[mode][1])
            if "target" not in opts:
                raise SpecError("the MnasNet reward needs a target",
                                hint="add 'target': T (same unit as the metric)")
            return MnasNetReward(**opts)
        if kind == "objective":
            return ObjectiveReward(**opts)
    except TypeError as e:
        raise SpecError(f"bad option in reward spec {spec!r}: {e}") from None
    raise SpecError(f"unknown reward kind {kind!r}",
                    hint="use 'accuracy', 'mnasnet' or 'objective'")
