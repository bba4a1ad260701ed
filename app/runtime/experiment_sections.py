"""The sections of an experiment: one frozen pydantic model per ``[table]`` of an
experiment file (space, data, strategy, estimator, evaluator, target, latency, reward,
budget, executor), and the names their options may take. The whole experiment,
:class:`~nasir.runtime.experiment.Experiment`, is built from them.

>>> LatencyConfig.model_validate("measure").policy, LatencyConfig().budget
('measure', 0.1)
>>> BudgetConfig(trials=4).wall_time_s
200.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nasir.errors import NasirError


def _env_seconds(name: str, default: float) -> float:
    """A default number of seconds from ``$name`` (``default`` when unset); a value that is
    not a number >= 0 is refused with the variable's name."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise NasirError(f"${name} must be a number of seconds >= 0, got {text!r}",
                         hint=f"unset {name} or give e.g. 0 or 10")
    return v

__all__ = [
    "DATA_ESTIMATORS",
    "DIRECTIONS",
    "ESTIMATORS",
    "EXECUTORS",
    "LATENCY_POLICIES",
    "REWARDS",
    "TARGET_KINDS",
    "TRAINING_DEFAULTS",
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "EstimatorConfig",
    "EvaluatorConfig",
    "ExecutorConfig",
    "LatencyConfig",
    "RewardConfig",
    "SpaceConfig",
    "StrategyConfig",
    "TargetConfig",
]

ESTIMATORS = ("training", "nb201", "oneshot", "fault", "evaluator", "shared")
#: estimators that train on (and so build the space for) the run's data
DATA_ESTIMATORS = ("training", "oneshot", "evaluator", "shared")
EXECUTORS = ("inprocess", "pool", "ray")
TARGET_KINDS = ("host", "cuda", "rpc")
REWARDS = ("auto", "mnasnet", "accuracy", "objective")
LATENCY_POLICIES = ("auto", "measure", "predict")
#: training-estimator options applied under the user's (a 3-epoch low-fidelity estimate)
TRAINING_DEFAULTS = {"epochs": 3}
DIRECTIONS = ("max", "min")


class ConfigError(NasirError):
    """An experiment option is missing, unknown or out of range."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpaceConfig(_Model):
    """Which space (a spec: built-in name, registered or entry-point name,
    ``package.module:function`` or ``path/to/file.py:function``) and its build options."""

    name: str = "tiny_mnasnet"
    options: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Model):
    """Which strategy (a name in ``nasir.strategies.STRATEGIES``) and its options."""

    name: str = "evolution"
    options: dict[str, Any] = Field(default_factory=dict)


class EstimatorConfig(_Model):
    """How a trial is scored.

    ``training`` trains on scikit-learn digits (options go to the torch estimator);
    ``nb201`` looks accuracy up in the NAS-Bench-201 table; ``oneshot`` scores candidates
    with weights inherited from one trained supernet
    (:class:`~nasir.runtime.weight_sharing.OneShotEstimator`, options are its
    :class:`~nasir.runtime.weight_sharing.OneShotConfig` fields); ``shared`` scores an ENAS
    run's children with the shared weights it trains (``strategy enas`` turns ``training``
    into it, :func:`~nasir.runtime.shared_weights.enas_options`); ``latency`` adds
    TVM-measured latency on :class:`TargetConfig` (``auto``: on when the reward or a
    constraint needs it). Training defaults to ``TRAINING_DEFAULTS`` (3 epochs) under the
    given options.
    """

    kind: Literal["training", "nb201", "oneshot", "fault", "evaluator", "shared"] = "training"
    options: dict[str, Any] = Field(default_factory=dict)
    latency: Literal["auto", "on", "off"] = "auto"


class DataConfig(_Model):
    """The data trials train on: ``digits`` (embedded), ``cifar10``, ``cifar100``, ``mnist``,
    ``fashion_mnist``, ``svhn`` (published files under ``options.root``; ``download``),
    ``npz:PATH``, ``imagefolder:PATH`` or ``module:function`` / ``file.py:function``
    (see :mod:`nasir.backends.torch.datasets`). ``None``: the estimator's default (digits for
    training and weight sharing, none for a user evaluator or a table)."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class EvaluatorConfig(_Model):
    """A user objective: ``function`` (``module:function`` or ``file.py:function``) takes a
    :class:`~nasir.runtime.evaluator.Trial` and returns metrics (a dict, or a number for the
    first objective). ``options`` reach it as ``trial.options``. ``prune``: ``median`` stops
    a trial whose ``trial.report(step, value)`` is worse than the median of earlier trials at
    that step (after ``prune_startup`` trials and ``prune_warmup`` steps); ``none`` never."""

    function: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    prune: Literal["median", "none"] = "median"
    prune_startup: int = Field(default=5, ge=1)
    prune_warmup: int = Field(default=0, ge=0)


class TargetConfig(_Model):
    """The hardware latency is measured on: ``host``, ``cuda`` or ``rpc`` (ARM boards).

    ``spec`` overrides the TVM target (a registry name, JSON dict or CLI string); for ``rpc``
    give ``host``/``port``/``key`` of the tracker or server.
    """

    kind: Literal["host", "cuda", "rpc"] = "host"
    spec: str | None = None
    rpc_host: str = "127.0.0.1"
    rpc_port: int = Field(default=9190, ge=1, le=65535)
    rpc_key: str | None = None
    repeats: int = Field(default=10, ge=1)


class LatencyConfig(_Model):
    """Which latency a trial carries (:mod:`nasir.runtime.latency_policy`); a bare string
    (``latency = "measure"``) sets ``policy``.

    ``measure``: every trial's network is compiled and measured in its worker. ``predict``:
    from the per-layer latency table (layers the table lacks are measured once; no network
    is compiled). ``auto`` (default): predicted, and the whole network measured for every
    trial that enters the Pareto front or the ``top_k`` by reward, a random ``calibration``
    share and, at the end, the whole front; a per-run linear correction table → measured is
    refit after each measurement (on an ``rpc`` target ``auto`` measures every trial).
    ``budget``: under ``auto``, the measurement process's busy seconds during the run stay
    under this fraction of the seconds trials have trained (waiting measurements go front
    first; the final front is measured outside it; 0: only at the end).
    ``table``: the table's SQLite file (default: shared per user,
    ``$NASIR_CACHE_DIR/latency_lut.sqlite``); ``cores``: CPUs reserved for measuring
    while training runs elsewhere; ``tuned``: measure code built from the target's tuning
    database; ``tune_trials``: with ``tuned``, each workload of a measured network that the
    database lacks is tuned in the background with this many measured candidates (0: never
    tune, :mod:`nasir.runtime.background_tuning`). ``paths``: the deployment paths a measured
    latency is the fastest of — ``tvm`` (the compiled library), ``onnxruntime`` (the ONNX
    model), ``eager`` (PyTorch), each as ``nasir export`` writes it, same weights and
    threads; ``auto`` (default) is ``["tvm", "onnxruntime"]`` on a ``host`` target and
    ``["tvm"]`` elsewhere. A measured trial says which path won (``latency_path``) and
    carries each path's latency (``latency_paths_ms``). ``settle_s``: on this machine's CPU a
    latency is timed only while the machine runs at its full speed (a reference kernel
    within 25 % of its fastest, :mod:`nasir.backends.tvm.machine_speed`), waiting up to this
    many seconds for it (0: time at once; ``$NASIR_LATENCY_SETTLE_S`` sets the default, e.g.
    0 on a machine busy with other work, as nasir's test suite does); a measured trial
    carries the speed it was timed at (``latency_speed``, 1.0 = full).

    >>> LatencyConfig(paths=["onnxruntime"]).paths
    ['onnxruntime']
    """

    policy: Literal["auto", "measure", "predict"] = "auto"
    top_k: int = Field(default=3, ge=1)
    calibration: float = Field(default=0.1, ge=0, le=1)
    budget: float = Field(default=0.1, ge=0)
    cores: int = Field(default=1, ge=1)
    table: str | None = None
    tuned: bool = False
    tune_trials: int = Field(default=4, ge=0)
    paths: Literal["auto"] | list[Literal["tvm", "onnxruntime", "eager"]] = "auto"
    settle_s: float = Field(default_factory=lambda: _env_seconds("NASIR_LATENCY_SETTLE_S", 10.0),
                            ge=0)

    @field_validator("paths")
    @classmethod
    def _some_path(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one path (tvm, onnxruntime, eager) or 'auto'")
        return v

    @model_validator(mode="before")
    @classmethod
    def _bare_policy(cls, v: Any) -> Any:
        return {"policy": v} if isinstance(v, str) else v


class RewardConfig(_Model):
    """The scalar the strategy maximises (built by ``nasir.strategies.rewards.make_reward``).

    ``mnasnet``: ``accuracy · (metric / target) ** w`` with ``w = alpha`` when the metric is
    at or under the target and ``beta`` over it; ``mode`` ``soft`` is MnasNet's
    ``alpha = beta = -0.07``, ``hard`` is ``alpha = 0, beta = -1``. ``accuracy``: accuracy.
    ``objective``: the run's first objective in its direction (``latency_ms:min`` maximises
    ``-latency_ms``). ``auto`` (default): ``mnasnet`` when the objectives are accuracy:max and
    latency_ms:min, latency is measured and no user evaluator runs, else ``objective``.
    """

    kind: Literal["auto", "mnasnet", "accuracy", "objective"] = "auto"
    target: float = Field(default=1.0, gt=0)
    metric: str = "latency_ms"
    mode: Literal["soft", "hard"] = "soft"

    def spec(self, objectives: Mapping[str, str] | None = None,
             evaluator: bool = False, latency_off: bool = False) -> dict[str, Any]:
        """The spec for ``make_reward`` (``auto`` and ``objective`` read ``objectives``)."""
        objectives = dict(objectives or {"accuracy": "max"})
        kind = self.kind
        if kind == "auto":
            off = latency_off and self.metric == "latency_ms"
            mnas = (not evaluator and not off and objectives.get("accuracy") == "max"
                    and objectives.get(self.metric) == "min" and len(objectives) == 2)
            kind = "mnasnet" if mnas else "objective"
        if kind == "accuracy":
            return {"kind": "accuracy"}
        if kind == "objective":
            metric, direction = next(iter(objectives.items()))
            return {"kind": "objective", "metric": metric, "direction": direction}
        return {"kind": "mnasnet", "target": self.target, "metric": self.metric,
                "mode": self.mode}


class BudgetConfig(_Model):
    """When the search stops proposing: after ``trials`` trials or ``wall_time_s`` seconds
    (trials in flight then finish). The defaults fit the main job in under 5 minutes on a
    2-core laptop; ``nasir search --trials N`` without ``--wall-time`` drops the time limit."""

    trials: int = Field(default=32, ge=1)
    wall_time_s: float | None = Field(default=200.0, gt=0)


class ExecutorConfig(_Model):
    """Where trials run: ``inprocess``, a local process ``pool`` (default) or ``ray``.

    ``workers`` (trials at once) left unset means: one per GPU when the run trains on CUDA
    (``device`` ``cuda``, or ``auto`` with GPUs; one for ``cuda:N``), else 2. Each pool
    worker owns one GPU, round-robin. Under Ray a trial runs on the ``gpus_per_trial`` GPUs
    Ray grants it; left at 0 on a CUDA run with a cluster that has GPUs, it is 1
    (:mod:`nasir.runtime.gpus`).
    """

    kind: Literal["inprocess", "pool", "ray"] = "pool"
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    trial_timeout_s: float | None = Field(default=None, gt=0)
