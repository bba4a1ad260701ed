"""MetaQNN: ε-greedy Q-learning with experience replay (Baker et al., "Designing Neural
Network Architectures using Reinforcement Learning", ICLR 2017).

The agent builds an architecture one decision at a time, walking the space's decisions in
schema order and skipping those the choices so far make inactive (a ``more = 0`` depth
decision — MetaQNN's *terminate* action — drops the rest of that part of the network).
An episode is the sequence of (state, action) pairs; its only reward is the final one.

States (``state=``):

* ``"prefix"`` — the decisions made so far (a search tree; exact for any space);
* ``"layer"`` — MetaQNN's layer states: the decision being made (its label names the
  layer type and depth, e.g. ``u2_kernel``, ``fc0_more``), the value chosen just before it
  and the *representation size* (spatial size after the pools chosen so far, computed from
  the space's input shape and the (size, stride) its ``pool`` decisions declare in their
  metadata, :attr:`~nasir.decision_meta.DecisionMeta.windows`), so Q-values are shared
  across histories as in the paper;
* ``"auto"`` (default) — ``"layer"`` for a space whose decisions declare pooling windows
  (the ``metaqnn`` space), ``"prefix"`` otherwise.

Learning, as the official code: Q initialised to 0.5; after each new model the episode
joins the replay memory and ``replays`` (128) episodes are drawn from it uniformly and
replayed backwards with ``Q(s,a) ← (1−α)Q(s,a) + α(r + γ max Q(s',·))`` (α = 0.01,
γ = 1, r = the reward at the last step, 0 before). ε follows the paper's schedule, counted
in distinct models: ε = 1.0 for 1,500 models, then 0.9, 0.8, 0.7 for 100 each and
0.6 … 0.1 for 150 each; ``budget=N`` scales those counts to N models.

Queries: a re-built architecture whose reward is known joins the replay memory for free
(the official code also reuses trained models' accuracies) and the agent builds another;
after ``max_tries`` repeats a fresh uniform sample is proposed.

>>> from nasir.spaces import get_space
>>> s = MetaQNN(get_space("nb201"), seed=0, budget=10)
>>> [round(e, 2) for e in s.epsilons[:2]], len(s.epsilons)
([1.0, 1.0], 10)
>>> a = s.propose(1)[0]; s.feedback(a, {"accuracy": 0.9})
>>> round(s.q_value(s.trajectory(a)[0][0], s.trajectory(a)[0][1]), 4) > 0.5
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from nasir.errors import SpecError
from nasir.passes.mutation import always_active
from nasir.space import Assignment, Decision, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, fresh_sample
from nasir.strategies.rewards import AccuracyReward, Reward, make_reward

__all__ = ["EPSILON_SCHEDULE", "MetaQNN", "scaled_schedule"]

#: the official code's ε schedule (CIFAR-10): (ε, number of distinct models)
EPSILON_SCHEDULE: tuple[tuple[float, int], ...] = (
    (1.0, 1500), (0.9, 100), (0.8, 100), (0.7, 100), (0.6, 150), (0.5, 150), (0.4, 150),
    (0.3, 150), (0.2, 150), (0.1, 150))

STATES = ("auto", "prefix", "layer")
State = tuple


def scaled_schedule(budget: int | None,
                    schedule: Sequence[Sequence[float]] = EPSILON_SCHEDULE) -> list[float]:
    """ε for each model index: the schedule's counts scaled to ``budget`` models in all.

    >>> s = scaled_schedule(27)
    >>> s[:16].count(1.0), s[-1], len(s)
    (15, 0.1, 27)
    """
    total = sum(int(c) for _, c in schedule)
    out: list[float] = []
    acc = 0.0
    for eps, count in schedule:
        acc += count * (budget / total if budget else 1.0)
        out.extend([float(eps)] * (round(acc) - len(out)))
    return out


class MetaQNN(Strategy):
    """ε-greedy tabular Q-learning over the decision sequence, with experience replay."""

    name: ClassVar[str] = "metaqnn"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 reward: str | Mapping[str, Any] | None = None, lr: float = 0.01,
                 discount: float = 1.0, replays: int = 128, q_init: float = 0.5,
                 budget: int | None = None, schedule: Sequence[Sequence[float]] | None = None,
                 state: str = "auto", max_tries: int = 50) -> None:
        super().__init__(space, seed, objective)
        if state not in STATES:
            raise SpecError(f"unknown MetaQNN state {state!r}", hint=f"use one of {STATES}")
        if not 0 < lr <= 1 or not 0 <= discount <= 1:
            raise SpecError(f"MetaQNN needs 0 < lr <= 1 and 0 <= discount <= 1, got "
                            f"lr={lr}, discount={discount}")
        self.reward: Reward = (AccuracyReward(key=objective) if reward is None
                               else make_reward(reward))
        self.lr, self.discount, self.q_init = float(lr), float(discount), float(q_init)
        self.replays = max(0, int(replays))
        self.epsilons = scaled_schedule(budget, schedule or EPSILON_SCHEDULE)
        self._windows = {d.label: {o: (k, st) for o, k, st in d.meta.windows}
                         for d in space.decisions if d.meta.windows}
        self.state_kind = ("layer" if self._windows else "prefix") \
            if state == "auto" else state
        self.max_tries = max(1, int(max_tries))
        self.q: dict[State, np.ndarray] = {}
        self.memory: list[tuple[list[tuple[State, int]], float]] = []
        self.seen = SeenArchitectures(space)
        self._all_active = len(always_active(space)) == len(space.decisions)
        self._active_cache: dict[tuple, bool] = {}
        self._models = 0
        self._input_hw = self._input_size()

    # -- states -------------------------------------------------------------------------
    def _input_size(self) -> int:
        shape: tuple[int, ...] = self.space.input_shape or ()
        return int(shape[-1]) if len(shape) == 3 else 1

    def _rep_size(self, values: Mapping[str, Any]) -> int:
        size = self._input_hw
        for label, v in values.items():
            window = self._windows.get(label, {}).get(v)
            if window is not None:
                k, st = window
                size = (size + 2 * (k // 2) - k) // st + 1
        return size

    def _state(self, values: dict[str, Any], d: Decision, last: tuple | None) -> State:
        if self.state_kind == "prefix":
            return (d.label, tuple(values.items()))
        return (d.label, last, self._rep_size(values))

    def _active(self, values: dict[str, Any], k: int) -> bool:
        if self._all_active:
            return True
        key = (k, tuple(values.items()))
        got = self._active_cache.get(key)
        if got is None:
            full = {d.label: d.options[0] for d in self.space.decisions}
            full.update(values)
            got = self.space.decisions[k].label in self.space.active(full)
            self._active_cache[key] = got
        return got

    def _walk(self, choose: Callable[[State, Decision], int]
              ) -> tuple[dict[str, Any], list[tuple[State, int]]]:
        values: dict[str, Any] = {}
        traj: list[tuple[State, int]] = []
        last: tuple | None = None
        for k, d in enumerate(self.space.decisions):
            if not self._active(values, k):
                continue
            s = self._state(values, d, last)
            i = choose(s, d)
            values[d.label] = d.options[i]
            traj.append((s, i))
            last = (d.label, d.options[i])
        return values, traj

    def trajectory(self, a: Mapping[str, Any]) -> list[tuple[State, int]]:
        """The (state, action) sequence that builds ``a``."""
        return self._walk(lambda s, d: d.index(a[d.label]))[1]

    # -- Q-learning ---------------------------------------------------------------------
    def _qrow(self, s: State, size: int) -> np.ndarray:
        row = self.q.get(s)
        if row is None:
            row = self.q[s] = np.full(size, self.q_init)
        return row

    def q_value(self, s: State, action: int) -> float:
        """Q(s, a) (the initial value for unseen pairs)."""
        row = self.q.get(s)
        return self.q_init if row is None else float(row[action])

    def epsilon(self) -> float:
        """ε for the next distinct model."""
        if not self.epsilons:
            return 0.0
        return self.epsilons[min(self._models, len(self.epsilons) - 1)]

    def _choose(self, eps: float) -> Callable[[State, Decision], int]:
        def choose(s: State, d: Decision) -> int:
            if self.rng.random() < eps:
                return int(self.rng.integers(d.size))
            row = self._qrow(s, d.size)
            best = np.flatnonzero(row == row.max())
            return int(best[int(self.rng.integers(len(best)))])
        return choose

    def _update(self, traj: list[tuple[State, int]], reward: float) -> None:
        sizes = {d.label: d.size for d in self.space.decisions}
        nxt: float | None = None
        for s, act in reversed(traj):
            row = self._qrow(s, sizes[s[0]])
            target = reward if nxt is None else self.discount * nxt
            row[act] = (1 - self.lr) * row[act] + self.lr * target
            nxt = float(row.max())

    def _remember(self, traj: list[tuple[State, int]], reward: float) -> None:
        self.memory.append((traj, reward))
        for _ in range(self.replays):
            t, r = self.memory[int(self.rng.integers(len(self.memory)))]
            self._update(t, r)

    # -- contract -----------------------------------------------------------------------
    def _one(self) -> Assignment:
        for _ in range(self.max_tries):
            values, traj = self._walk(self._choose(self.epsilon()))
            a = self.space.check(values)
            if self.seen.add(a):
                a.provenance = {"metaqnn": {"epsilon": self.epsilon()}}
                return a
            known = self.seen.known(a)
            if known is not None:
                self._remember(traj, known)
        return fresh_sample(self.space, self.seen, self.rng)

    def _propose(self, n: int) -> list[Assignment]:
        out = []
        for _ in range(n):
            out.append(self._one())
            self._models += 1
        return out

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        r = self.reward(metrics)
        self.seen.record(a, r)
        self._remember(self.trajectory(a), r)
