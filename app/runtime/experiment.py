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

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from nasir.runtime.experiment_sections import (
    DATA_ESTIMATORS,
    DIRECTIONS,
    ESTIMATORS,
    EXECUTORS,
    LATENCY_POLICIES,
    REWARDS,
    TARGET_KINDS,
    TRAINING_DEFAULTS,
    BudgetConfig,
    ConfigError,
    DataConfig,
    EstimatorConfig,
    EvaluatorConfig,
    ExecutorConfig,
    LatencyConfig,
    RewardConfig,
    SpaceConfig,
    StrategyConfig,
    TargetConfig,
    _Model,
)

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
    "Experiment",
    "LatencyConfig",
    "RewardConfig",
    "SpaceConfig",
    "StrategyConfig",
    "TargetConfig",
    "load_experiment",
]


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
        other = [p for p in self.latency_paths if p != "tvm"]
        if other and self.target.kind != "host":
            raise ValueError(f"latency.paths {other[0]!r} runs on this machine's CPU, but "
                             f"the target is {self.target.kind!r}; use latency.paths "
                             "['tvm'] (or 'auto') for it")
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
    def latency_paths(self) -> tuple[str, ...]:
        """The deployment paths a measured latency is the fastest of (``latency.paths``
        with ``auto`` resolved for the target)."""
        from nasir.runtime.latency_measure import deploy_paths

        return deploy_paths(self.latency.paths, self.target.kind)

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
