"""The strategy contract: ``propose`` / ``feedback`` / ``state`` and rebuild from history.

Public methods wrap small protected hooks (``_propose``, ``_feedback``). Every strategy
takes a seed and is deterministic given its seed and the feedback it receives, so it can
be rebuilt after a crash by replaying its stored history.

>>> from nasir.spaces import get_space
>>> from nasir.strategies.base import STRATEGIES, make_strategy
>>> s = make_strategy("random", get_space("nb201"), seed=1)
>>> a = s.propose(2)
>>> s.feedback(a[0], {"accuracy": 0.5})
>>> again = make_strategy("random", get_space("nb201"), seed=1)
>>> again.replay(s.state()["history"])
>>> again.propose(1) == s.propose(1)
True
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from nasir.errors import NasirError, SpecError
from nasir.space import Assignment, Space
from nasir.strategies.jobs import SearchJob

__all__ = ["STRATEGIES", "AwaitFeedback", "Strategy", "make_strategy", "register_strategy",
           "strategy_names"]

#: registry name → "module:Class" (imported lazily)
STRATEGIES: dict[str, str] = {
    "random": "nasir.strategies.random_search:RandomSearch",
    "grid": "nasir.strategies.grid:GridSearch",
    "regularized_evolution": "nasir.strategies.evolution:RegularizedEvolution",
    "reinforce": "nasir.strategies.reinforce:Reinforce",
    "ppo": "nasir.strategies.ppo:PPO",
    "metaqnn": "nasir.strategies.metaqnn:MetaQNN",
    "pnas": "nasir.strategies.pnas:PNAS",
    "bananas": "nasir.strategies.bananas:Bananas",
    "enas": "nasir.strategies.oneshot.enas_runner:Enas",
    "darts": "nasir.strategies.oneshot.darts:Darts",
    "darts_first_order": "nasir.strategies.oneshot.darts:DartsFirstOrder",
    "darts_pt": "nasir.strategies.oneshot.darts:DartsPT",
    "fbnet": "nasir.strategies.oneshot.fbnet:FBNet",
    "fbnet_gdas": "nasir.strategies.oneshot.fbnet:FBNetGDAS",
    "proxylessnas": "nasir.strategies.oneshot.proxylessnas:Proxyless",
    "proxylessnas_penalty": "nasir.strategies.oneshot.proxylessnas:ProxylessPenalty",
    "netadapt": "nasir.strategies.oneshot.netadapt_trials:NetAdapt",
    "netadapt_blocks": "nasir.strategies.oneshot.netadapt_blocks_trials:NetAdaptBlocks",
}


class AwaitFeedback(NasirError):
    """Raised by ``_propose`` when the strategy cannot propose before the trials in flight
    are fed back (NetAdapt between two iterations); the driver proposes again after the
    next feedback, and nothing is recorded for the refused call."""


def register_strategy(name: str, target: str) -> None:
    """Register a strategy class under a CLI/registry name."""
    STRATEGIES[name] = target


def strategy_names() -> list[str]:
    """Registered strategy names."""
    return list(STRATEGIES)


def make_strategy(name: str, space: Space, seed: int = 0, **options: Any) -> Strategy:
    """Build a registered strategy; unknown names and options are clear errors."""
    if name not in STRATEGIES:
        raise SpecError(f"unknown strategy {name!r}",
                        hint=f"known strategies: {', '.join(STRATEGIES)}")
    mod, _, cls = STRATEGIES[name].partition(":")
    klass = getattr(importlib.import_module(mod), cls)
    try:
        return klass(space, seed=seed, **options)
    except TypeError as e:
        raise SpecError(f"bad option for strategy {name}: {e}") from None


class Strategy:
    """Base class. Subclasses set ``name`` and implement ``_propose`` (and usually
    ``_feedback``); they draw randomness only from ``self.rng``.

    ``metrics`` given to :meth:`feedback` hold at least the objective the strategy
    maximises (``objective``, default ``"accuracy"``); ``{"status": "failed"}`` marks a failed
    trial, which strategies treat as the worst score.
    """

    name: ClassVar[str] = "strategy"
    #: the estimator kinds that can evaluate this strategy's trials (``None``: any). A
    #: strategy whose trials carry inputs only some estimators read (NetAdapt's inherited
    #: weights: the training estimator) names them; a run pairing it with another is a
    #: NasirError at start.
    estimators: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy") -> None:
        self.space = space
        self.seed = int(seed)
        self.objective = objective
        self.rng = np.random.default_rng(self.seed)
        self.history: list[dict[str, Any]] = []
        self.results: list[tuple[Assignment, dict[str, Any]]] = []

    # -- public contract ------------------------------------------------------------------
    def propose(self, n: int = 1) -> list[Assignment]:
        """The next ``n`` assignments to evaluate."""
        if n < 1:
            raise SpecError(f"propose needs n >= 1, got {n}")
        out = [self.space.check(a) for a in self._propose(n)]
        self.history.append({"event": "propose", "n": n,
                             "assignments": [a.to_json() for a in out]})
        return out

    def feedback(self, assignment: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """Report the metrics of an evaluated assignment."""
        a = self.space.check(assignment)
        m = dict(metrics)
        self.history.append({"event": "feedback", "assignment": a.to_json(), "metrics": m})
        self.results.append((a, m))
        self._feedback(a, m)

    def state(self) -> dict[str, Any]:
        """JSON-able state: name, seed, objective and the full event history."""
        return {"strategy": self.name, "seed": self.seed, "objective": self.objective,
                "history": list(self.history)}

    def replay(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild internal state by replaying ``history`` on a fresh strategy."""
        if self.history:
            raise NasirError("replay needs a fresh strategy", hint="build a new one first")
        for k, ev in enumerate(history):
            if ev.get("event") == "propose":
                got = [a.to_json() for a in self.propose(int(ev["n"]))]
                if got != list(ev["assignments"]):
                    raise NasirError("stored history does not replay: the strategy proposed "
                                     "different assignments", where=f"history[{k}]",
                                     hint="was it built with another seed or options?")
            elif ev.get("event") == "feedback":
                self.feedback(ev["assignment"], ev["metrics"])
            elif ev.get("event") == "job":
                self.job_done(str(ev["name"]), ev["result"])
            else:
                raise NasirError(f"unknown history event {ev.get('event')!r}",
                                 where=f"history[{k}]")

    def job(self) -> SearchJob | None:
        """Training the runner must do before the next ``propose`` (a
        :class:`~nasir.strategies.jobs.SearchJob`), or ``None`` (the default: black-box
        strategies train nothing themselves)."""
        return None

    def job_done(self, name: str, result: Mapping[str, Any]) -> None:
        """The runner finished job ``name`` with ``result``; recorded as an event, so a
        replayed history hands the result back without running the job again."""
        r = dict(result)
        self.history.append({"event": "job", "name": name, "result": r})
        self._job_done(name, r)

    def trial_inputs(self, k: int) -> dict[str, Any]:
        """What the ``k``-th proposed trial (0-based, in proposal order) starts from besides
        its assignment — JSON-able, e.g. weights to inherit and training overrides
        (:mod:`nasir.runtime.inherit`); the driver hands it to the worker as
        ``task["inputs"]`` and never reuses another trial's result for it. Default: ``{}``
        (a trial is its assignment). Must be the same after :meth:`replay`."""
        return {}

    # -- helpers for subclasses -----------------------------------------------------------
    def score(self, metrics: Mapping[str, Any]) -> float:
        """The value maximised: ``metrics[objective]``, ``-inf`` for failed trials."""
        if metrics.get("status", "ok") != "ok":
            return float("-inf")
        v = metrics.get(self.objective)
        if v is None or not np.isfinite(float(v)):
            return float("-inf")
        return float(v)

    def best(self) -> tuple[Assignment, dict[str, Any]] | None:
        """The best result seen so far."""
        if not self.results:
            return None
        return max(self.results, key=lambda r: self.score(r[1]))

    # -- hooks ------------------------------------------------------------------------------
    def _propose(self, n: int) -> list[Assignment]:
        raise NotImplementedError

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        """Update internal state (default: nothing)."""

    def _job_done(self, name: str, result: dict[str, Any]) -> None:
        """Take a finished job's result (default: nothing)."""
