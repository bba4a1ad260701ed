"""What a paper preset is: :class:`Preset` (one paper's experiment, as data) and the
:class:`Scale` rules its options follow under ``--trials``. The presets themselves are
:mod:`nasir.runtime.paper_presets`; :mod:`nasir.runtime.presets` looks them up.

Scaling. ``--trials N`` sets the number of trials (default: the paper's budget) and the
options tied to the budget follow (:class:`Scale`: MetaQNN's ε schedule is spread over
``N`` models, the evolution population keeps its share, PNAS plans its beam for ``N``).
``--epochs E`` sets the preset's first epoch setting to ``E`` and scales the others by the
same factor (DARTS: search 50 → ``E``, retraining 600 → ``12·E``; warm-ups stay below the
search epochs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nasir.runtime.experiment import Experiment

__all__ = ["Preset", "Scale"]


@dataclass(frozen=True)
class Scale:
    """How an option follows ``--trials N`` (the paper's budget is ``B``):

    * ``trials``: the option is ``N`` (MetaQNN's ``budget``);
    * ``share``: ``max(minimum, round(value · N / B))`` (an option in proportion);
    * ``cap``: ``min(value, max(minimum, round(N · fraction)))`` (an evolution population
      never larger than a share of the run).

    >>> Scale("cap", 0.5, 2).apply(100, 32, 20000), Scale("share").apply(256, 116, 1160)
    (16, 26)
    """

    kind: Literal["trials", "share", "cap"]
    fraction: float = 1.0
    minimum: int = 1

    def apply(self, value: Any, trials: int, budget: int) -> int:
        """The option's value in a run of ``trials`` trials."""
        if self.kind == "trials":
            return int(trials)
        if self.kind == "share":
            return max(self.minimum, round(float(value) * trials / budget))
        return int(min(value, max(self.minimum, round(trials * self.fraction))))

    def describe(self) -> str:
        """The rule in words (for ``nasir presets --json`` and the docs)."""
        if self.kind == "trials":
            return "= trials"
        if self.kind == "share":
            return f"× trials / paper budget (at least {self.minimum})"
        return f"at most {self.fraction:g} × trials (at least {self.minimum})"


@dataclass(frozen=True)
class Preset:
    """One paper's experiment (see the module docstring).

    ``epochs`` maps dotted experiment keys (``estimator.options.epochs``) to the paper's
    values; the first is what ``--epochs`` sets. ``scale`` maps dotted keys to the
    :class:`Scale` they follow under ``--trials``. ``paper_setting`` is the paper's setup in
    words; ``deviations`` say what differs here, and why.
    """

    name: str
    system: str
    paper: str
    space: str
    strategy: str
    budget: int
    budget_note: str
    paper_setting: str
    space_options: Mapping[str, Any] = field(default_factory=dict)
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    estimator: str = "training"
    estimator_options: Mapping[str, Any] = field(default_factory=dict)
    reward: Mapping[str, Any] = field(default_factory=lambda: {"kind": "accuracy"})
    objectives: Mapping[str, str] = field(default_factory=lambda: {"accuracy": "max"})
    latency: Literal["auto", "on", "off"] = "off"
    data: str = "digits"
    epochs: Mapping[str, int] = field(default_factory=dict)
    scale: Mapping[str, Scale] = field(default_factory=dict)
    deviations: tuple[str, ...] = ()

    def config(self, trials: int | None = None, epochs: int | None = None) -> dict[str, Any]:
        """The experiment as a nested dict, scaled to ``trials`` and ``epochs``."""
        n = int(trials or self.budget)
        d: dict[str, Any] = {
            "space": {"name": self.space, "options": dict(self.space_options)},
            "data": {"name": self.data},
            "strategy": {"name": self.strategy, "options": dict(self.strategy_options)},
            "estimator": {"kind": self.estimator, "options": dict(self.estimator_options),
                          "latency": self.latency},
            "reward": dict(self.reward),
            "objectives": dict(self.objectives),
            "budget": {"trials": n, "wall_time_s": None},
        }
        for key, rule in self.scale.items():
            _put(d, key, rule.apply(_get(d, key), n, self.budget))
        for key, value in self.epoch_settings(epochs).items():
            _put(d, key, value)
        return d

    def epoch_settings(self, epochs: int | None = None) -> dict[str, int]:
        """Every epoch setting for ``--epochs epochs`` (``None``: the paper's)."""
        if not self.epochs:
            return {}
        first = next(iter(self.epochs.values()))
        factor = 1.0 if epochs is None else epochs / first
        out: dict[str, int] = {}
        for key, paper in self.epochs.items():
            low = 0 if key.endswith("warmup") else 1
            out[key] = max(low, round(paper * factor))
        for key in out:
            if key.endswith("warmup"):  # the searches train the architecture after it
                search = key.rsplit(".", 1)[0] + ".epochs"
                limit = out.get(search, self.epochs.get(search))
                if limit is not None:
                    out[key] = min(out[key], max(0, limit - 1))
        return out

    def experiment(self, trials: int | None = None, epochs: int | None = None) -> Experiment:
        """The validated :class:`Experiment` (a :class:`ConfigError` names the preset)."""
        return Experiment.from_dict(self.config(trials, epochs), f"preset {self.name}")

    def to_json(self) -> dict[str, Any]:
        """Paper, settings (the experiment at the paper's budget), scaling and deviations."""
        return {
            "name": self.name, "system": self.system, "paper": self.paper,
            "paper_setting": self.paper_setting,
            "budget": {"paper_trials": self.budget, "note": self.budget_note,
                       "scaled_by_trials": {k: v.describe() for k, v in self.scale.items()}},
            "epochs": {"paper": dict(self.epochs),
                       "set_by_epochs": next(iter(self.epochs), None)},
            "settings": self.config(),
            "deviations": list(self.deviations),
        }

    def summary(self) -> str:
        """Space, strategy and estimator in one line (the docs table's nasir column)."""
        opts = ", ".join(f"{k}={v}" for k, v in self.space_options.items())
        epochs = ", ".join(f"{k.split('.')[0]} {k.rsplit('.', 1)[-1]} {v}"
                           for k, v in self.epochs.items())
        return (f"`{self.space}`{f' ({opts})' if opts else ''} · `{self.strategy}` · "
                f"{self.estimator}{f' ({epochs})' if epochs else ''} · "
                f"{self.budget:,} trials")


def _get(d: Mapping[str, Any], key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = d
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
