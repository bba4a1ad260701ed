"""Experiment configuration: one validated object built from CLI flags and/or a TOML/JSON file.

Every field has a default, so ``Experiment()`` is the main job: the MnasNet-style space on
the 8×8 digits images, regularized evolution, the MnasNet reward over digits accuracy and
TVM-measured host latency. Bad values raise :class:`ConfigError` naming the field and its
valid values.

>>> e = Experiment.from_dict({"strategy": {"name": "random"}, "budget": {"trials": 5},
...                           "estimator": {"kind": "nb201"}, "space": {"name": "nb201"}})
>>> e.strategy.name, e.budget.trials, e.reward_spec()["kind"], Experiment().reward_spec()["kind"]
('random', 5, 'objective', 'mnasnet')
>>> u = Experiment.from_dict({"evaluator": {"function": "mine.py:objective"},
...                           "objectives": {"loss": "min"}})
>>> u.estimator.kind, u.reward_spec()
('evaluator', {'kind': 'objective', 'metric': 'loss', 'direction': 'min'})
>>> try:
...     Experiment.from_dict({"budget": {"trials": 0}})
... except ConfigError as e:
...     print(e)
bad experiment option budget.trials: Input should be greater than or equal to 1
  fix:   give an integer >= 1
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nasir.errors import NasirError

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "EstimatorConfig",
    "EvaluatorConfig",
    "ExecutorConfig",
    "Experiment",
    "LatencyConfig",
    "RewardConfig",
    "SpaceConfig",
    "StrategyConfig",
    "TargetConfig",
    "load_experiment",
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
    ``table``: the table's SQLite file (default: shared per user,
    ``$NASIR_CACHE_DIR/latency_lut.sqlite``); ``cores``: CPUs reserved for measuring
    while training runs elsewhere; ``tuned``: measure code built from the target's tuning
    database; ``tune_trials``: with ``tuned``, each workload of a measured network that the
    database lacks is tuned in the background with this many measured candidates (0: never
    tune, :mod:`nasir.runtime.background_tuning`).
    """

    policy: Literal["auto", "measure", "predict"] = "auto"
    top_k: int = Field(default=3, ge=1)
    calibration: float = Field(default=0.1, ge=0, le=1)
    cores: int = Field(default=1, ge=1)
    table: str | None = None
    tuned: bool = False
    tune_trials: int = Field(default=4, ge=0)

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


class Experiment(_Model):
    """A whole experiment. ``constraints`` are hard upper bounds on metrics
    (e.g. ``{"params": 2e5, "latency_ms": 1.0}``); a trial over a bound is ``infeasible``."""

    name: str | None = None
    space: SpaceConfig = SpaceConfig()
    data: DataConfig = DataConfig()
    strategy: StrategyConfig = StrategyConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    objectives: dict[str, Literal["max", "min"]] = Field(
        default={"accuracy": "max", "latency_ms": "min"})
    constraints: dict[str, float] = Field(default_factory=dict)
    reward: RewardConfig = RewardConfig()
    target: TargetConfig = TargetConfig()
    latency: LatencyConfig = LatencyConfig()
    budget: BudgetConfig = BudgetConfig()
    executor: ExecutorConfig = ExecutorConfig()
    seed: int = Field(default=0, ge=0)
    #: where trials train: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``,
    #: ``cuda:N`` or ``mps``; honoured by the training and weight-sharing estimators, the
    #: one-shot strategies and handed to user evaluators as ``trial.device``
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")

    @field_validator("objectives")
    @classmethod
    def _two_at_most(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("give at least one objective")
        return v

    @model_validator(mode="after")
    def _evaluator_kind(self) -> Experiment:
        fn, kind = self.evaluator.function, self.estimator.kind
        if fn and kind == "training":  # a user evaluator replaces the default estimator
            object.__setattr__(self, "estimator",
                               self.estimator.model_copy(update={"kind": "evaluator"}))
        elif fn and kind != "evaluator":
            raise ValueError(f"evaluator.function is set but estimator.kind is {kind!r}; "
                             "use one of them")
        elif not fn and kind == "evaluator":
            raise ValueError("estimator.kind is 'evaluator' but no evaluator.function is "
                             "given")
        elif kind == "training" and self.strategy.name == "enas":
            from nasir.runtime.shared_weights import enas_options

            object.__setattr__(self, "estimator", self.estimator.model_copy(
                update={"kind": "shared", "options": enas_options(self.estimator.options)}))
        return self

    @model_validator(mode="after")
    def _latency_where(self) -> Experiment:
        if self.latency.policy == "predict" and self.target.kind == "rpc":
            raise ValueError("latency.policy 'predict' needs a per-layer table measured "
                             "here, but the target is a remote (rpc) device; use "
                             "latency.policy 'measure' or 'auto' (--latency-policy)")
        return self

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "experiment") -> Experiment:
        """Validate a nested dict; errors become :class:`ConfigError`."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise _config_error(e, source) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what the store keeps)."""
        return self.model_dump(mode="json")

    def merged(self, overrides: Mapping[str, Any]) -> Experiment:
        """A copy with dotted-key overrides applied (``{"budget.trials": 8}``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *path, last = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[last] = value
        return Experiment.from_dict(data, "command line")

    # -- derived ---------------------------------------------------------------------------
    def reward_spec(self) -> dict[str, Any]:
        """The reward strategies maximise, with ``auto`` resolved (see :class:`RewardConfig`)."""
        return self.reward.spec(self.objectives, self.estimator.kind == "evaluator",
                                self.estimator.latency == "off"
                                or self.estimator.kind in ("nb201", "shared"))

    @property
    def data_name(self) -> str | None:
        """The data set trials use: the ``[data]`` name, digits for the estimators that train
        when none is given, ``None`` when trials use no data set of the run's."""
        if self.data.name:
            return self.data.name
        return "digits" if self.estimator.kind in ("training", "oneshot", "shared") else None

    @property
    def latency_policy(self) -> str:
        """The latency policy trials run under: ``auto`` measures in the workers on a
        remote (rpc) target, whose table could not be measured here."""
        p = self.latency.policy
        return "measure" if p == "auto" and self.target.kind == "rpc" else p

    @property
    def needs_latency(self) -> bool:
        """Whether trials measure latency (reward, objective or constraint uses it)."""
        if self.estimator.latency != "auto":
            return self.estimator.latency == "on"
        if self.estimator.kind in ("nb201", "shared"):
            return False
        r = self.reward_spec()
        return ((r["kind"] == "mnasnet" and r["metric"] == "latency_ms")
                or "latency_ms" in self.objectives or "latency_ms" in self.constraints)


_HINTS = {
    "literal_error": None,
    "greater_than_equal": "give a number >= {ge}",
    "greater_than": "give a number > {gt}",
    "extra_forbidden": "remove it; valid keys here: {keys}",
    "int_parsing": "give an integer",
    "float_parsing": "give a number",
}


def _config_error(e: ValidationError, source: str) -> ConfigError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    ctx = err.get("ctx") or {}
    kind = err["type"]
    hint: str | None
    if kind == "literal_error":
        hint = f"valid values: {ctx.get('expected', '')}"
    elif kind == "extra_forbidden":
        hint = f"remove it; valid keys: {', '.join(_valid_keys(err['loc']))}"
    elif kind == "string_pattern_mismatch" and loc == "device":
        hint = "valid values: auto, cpu, cuda, cuda:N, mps"
    elif kind == "greater_than_equal" and isinstance(ctx.get("ge"), int):
        hint = f"give an integer >= {ctx['ge']}"
    else:
        tmpl = _HINTS.get(kind)
        hint = tmpl.format(**ctx) if tmpl else None
    return ConfigError(f"bad experiment option {loc}: {err['msg']}", where=None
                       if source == "experiment" else source, hint=hint)


def _valid_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Experiment
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return list(model.model_fields)


def load_experiment(path: str) -> Experiment:
    """Read an experiment from a ``.toml`` or ``.json`` file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read experiment file {path}: {e.strerror}", where=path) from None
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        elif ext == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"unknown experiment file type {ext or '(none)'!r}", where=path,
                              hint="use a .toml or .json file")
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path} is not valid {ext[1:].upper()}: {e}", where=path) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table/object at the top", where=path)
    return Experiment.from_dict(data, path)
