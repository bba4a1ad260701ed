"""User evaluators: the search runner calls *your* objective on each candidate.

An experiment's ``[evaluator] function = "module:function"`` (or ``file.py:function``; the
CLI's ``--evaluator``) names a function that takes one :class:`Trial` and returns metrics —
a dict such as ``{"accuracy": 0.93, "loss": 0.2}``, or one number, taken as the run's first
objective. Everything the runner gives stays: the store, resume after ``kill -9``, workers,
the report and the export.

A :class:`Trial` holds the assignment, the concrete graph (``trial.graph``), a way to build
the PyTorch module (``trial.build_module()``, seeded), the seed, the device, the run's data
(``trial.data``, a :class:`~nasir.backends.torch.data.DataSplits` when the run names one),
the evaluator's ``options``, and ``report(step, value)``: intermediate values of the first
objective. With ``prune = "median"`` a trial whose value at a step is worse than the median
of earlier trials at that step is stopped there (:class:`TrialPruned`); it is recorded as
done with its last value and ``pruned_at`` in its metrics. The weights of the last module a
trial built are kept for ``nasir export``.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> t = Trial(sp, sp.reference("resnet"), seed=0, objective=("accuracy", "max"))
>>> t.build_module()(__import__("torch").zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> p = MedianPruner(startup=2, warmup=0)
>>> p.prune(1, 0.2, {1: [0.5, 0.7, 0.9]}, "max"), p.prune(1, 0.8, {1: [0.5, 0.7, 0.9]}, "max")
(True, False)
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasir.errors import NasirError, TrialError
from nasir.space import Space

__all__ = ["FunctionEstimator", "MedianPruner", "Trial", "TrialPruned", "load_evaluator",
           "resolve_device"]


class TrialPruned(Exception):
    """Raised by :meth:`Trial.report` when the pruner stops the trial."""


def resolve_device(device: str | None = "auto") -> str:
    """The device a setting names here, as text: ``auto`` → ``cuda`` when PyTorch sees a
    GPU, else ``mps`` when present, else ``cpu``; a device this machine lacks is a
    :class:`~nasir.errors.BackendError`
    (:func:`nasir.backends.torch.device.resolve_device`)."""
    from nasir.backends.torch.device import resolve_device as resolve

    return str(resolve(device))


@dataclass(frozen=True)
class MedianPruner:
    """Optuna's median rule: after ``startup`` earlier trials reported at a step (and past
    ``warmup`` steps), stop a trial whose value is worse than their median."""

    startup: int = 5
    warmup: int = 0

    def prune(self, step: int, value: float, peers: Mapping[int, Sequence[float]],
              direction: str) -> bool:
        """Whether a trial reporting ``value`` at ``step`` should stop."""
        if step < self.warmup or not math.isfinite(value):
            return False
        seen = [v for v in peers.get(step, ()) if v is not None and math.isfinite(v)]
        if len(seen) < self.startup:
            return False
        med = statistics.median(seen)
        return value < med if direction == "max" else value > med


class Trial:
    """One candidate handed to a user evaluator (see the module docstring)."""

    def __init__(self, space: Space, assignment: Any, *, seed: int = 0,
                 device: str = "cpu", data: Any = None,
                 options: Mapping[str, Any] | None = None,
                 objective: tuple[str, str] = ("accuracy", "max"),
                 pruner: MedianPruner | None = None,
                 peers: Mapping[int, Sequence[float]] | None = None,
                 number: int | None = None) -> None:
        self.space = space
        self.assignment = space.check(assignment)
        self.seed = int(seed)
        self.device = device
        self.data = data
        self.options = dict(options or {})
        self.objective = objective
        self.number = number
        self.intermediate: dict[int, float] = {}
        self.pruned_at: int | None = None
        self._pruner = pruner
        self._peers = {int(k): list(v) for k, v in (peers or {}).items()}
        self._graph: Any = None
        self.module: Any = None

    @property
    def graph(self) -> Any:
        """The concrete graph IR of this candidate."""
        if self._graph is None:
            self._graph = self.space.instantiate(self.assignment)
        return self._graph

    def build_module(self, seed: int | None = None) -> Any:
        """The candidate as a ``torch.nn.Module`` (seeded init; on :attr:`device`). Its
        weights at the end of the evaluation are kept for ``nasir export``."""
        from nasir.backends.torch.lowering import lower

        m = lower(self.graph, seed=self.seed if seed is None else int(seed))
        if self.device != "cpu":
            m = m.to(self.device)
        self.module = m
        return m

    def report(self, step: int, value: float) -> None:
        """Record the objective's value after ``step`` (an epoch, say); raises
        :class:`TrialPruned` when the run's pruner stops this trial (let it propagate)."""
        step, value = int(step), float(value)
        self.intermediate[step] = value
        if self.should_prune(step, value):
            self.pruned_at = step
            raise TrialPruned(f"pruned at step {step}: {self.objective[0]}={value:.4g}")

    def should_prune(self, step: int, value: float) -> bool:
        """Whether the pruner would stop a trial reporting ``value`` at ``step``."""
        if self._pruner is None:
            return False
        return self._pruner.prune(step, value, self._peers, self.objective[1])

    def __repr__(self) -> str:
        return f"<Trial {self.number} seed={self.seed} {self.assignment.to_json()}>"


def load_evaluator(spec: str, base_dir: str | None = None) -> Callable[[Trial], Any]:
    """The evaluator function a spec names; it must take one argument (the trial)."""
    from nasir.userload import load_callable

    fn, _ = load_callable(spec, base_dir=base_dir, what="evaluator")
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise NasirError(f"evaluator {spec} must take exactly one argument (the trial)",
                         where=spec, hint="def objective(trial): ... return {...}") from None
    except ValueError:  # no signature to inspect
        pass
    return fn


class FunctionEstimator:
    """Adapter: the runtime's estimator protocol over a user evaluator function.

    ``device``: where the trial's module lives (``trial.device``, resolved here; a machine
    without it is an error now, not in your function); the metrics say it (``device``)."""

    name = "evaluator"

    def __init__(self, function: str, *, options: Mapping[str, Any] | None = None,
                 objectives: Mapping[str, str] | None = None, prune: str = "median",
                 prune_startup: int = 5, prune_warmup: int = 0, data: Any = None,
                 device: str = "auto", weights_dir: str | None = None) -> None:
        self.fn = load_evaluator(function)
        self.spec = function
        self.options = dict(options or {})
        metric, direction = next(iter(dict(objectives or {"accuracy": "max"}).items()))
        self.objective = (metric, direction)
        self.pruner = MedianPruner(prune_startup, prune_warmup) if prune == "median" else None
        self.data = data
        self.device = resolve_device(device)
        self.weights_dir = weights_dir
        self.task: Mapping[str, Any] = {}

    def set_task(self, task: Mapping[str, Any]) -> None:
        """The worker's task for the next evaluation (trial number, pruning peers)."""
        self.task = task

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """Call the user's function; a pruned trial keeps its last reported value."""
        peers = {int(k): v for k, v in dict(self.task.get("peers") or {}).items()}
        trial = Trial(space, assignment, seed=seed, device=self.device, data=self.data,
                      options=self.options, objective=self.objective, pruner=self.pruner,
                      peers=peers, number=self.task.get("trial"))
        try:
            out = self.fn(trial)
        except TrialPruned:
            out = {self.objective[0]: trial.intermediate[trial.pruned_at or 0]}
        metrics = self._metrics(out)
        metrics["device"] = self.device
        if trial.intermediate:
            metrics["intermediate"] = {str(k): v for k, v in sorted(trial.intermediate.items())}
        if trial.pruned_at is not None:
            metrics["pruned_at"] = trial.pruned_at
        if self.weights_dir and trial.module is not None:
            from nasir.runtime.training_estimator import save_weights

            save_weights(space, trial.assignment, trial.module, self.weights_dir)
        return metrics

    def _metrics(self, out: Any) -> dict[str, Any]:
        if isinstance(out, Mapping):
            metrics = {str(k): _plain(v) for k, v in out.items()}
        elif isinstance(out, int | float) and not isinstance(out, bool):
            metrics = {self.objective[0]: float(out)}
        elif hasattr(out, "item"):
            metrics = {self.objective[0]: float(out.item())}
        else:
            raise TrialError(f"evaluator {self.spec} returned {type(out).__name__}",
                             hint="return a dict of metrics or one number")
        if self.objective[0] not in metrics:
            raise TrialError(f"evaluator {self.spec} returned no {self.objective[0]!r} (the "
                             f"run's first objective); got {sorted(metrics)}",
                             hint="return it, or change the run's objectives")
        return metrics


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, str | bytes):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v
