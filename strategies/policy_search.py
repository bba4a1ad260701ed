"""Shared machinery of the controller-based strategies (REINFORCE, PPO).

A :class:`ControllerStrategy` samples decision sequences from an LSTM
:class:`~nasir.strategies.controller.Controller`, turns them into assignments with
``space.from_indices`` and learns from rewards (:mod:`nasir.strategies.rewards`).

Queries: a sampled architecture whose canonical hash was already proposed is not proposed
again; it is redrawn. With ``learn_repeats=True`` a redrawn one whose reward is known also
becomes a free experience for the learner (its reward is known without a new query); off
by default, since a collapsed policy would then take ``max_tries`` updates per proposal.
After ``max_tries`` repeats in a row the strategy proposes a fresh uniform sample instead
(scored under the current policy), so a collapsed policy cannot loop forever.

Input decisions over subsets (NAS-RL anchors, ENAS skips) are sampled by anchor-point
attention by default (``input_sampling="anchor_attention"``, one sigmoid per earlier
layer, as Zoph & Le and ENAS) or as one softmax over the subsets
(``"subset_softmax"``); see :mod:`nasir.strategies.controller`. ``skip_weight`` adds
ENAS's KL skip penalty towards ``skip_target`` to the loss (0 by default: NAS-RL has
none). :attr:`ControllerStrategy.settings` (also in :meth:`~ControllerStrategy.state`)
records every setting a run used.

>>> from nasir.spaces import get_space
>>> from nasir.strategies import make_strategy
>>> sp = get_space("nasrl", input_shape=(1, 8, 8), layers=4)
>>> s = make_strategy("reinforce", sp)
>>> k = [d.label for d in sp.decisions].index("l3_skip")
>>> s.settings["input_sampling"], s.controller.inputs[k].required, s.controller.inputs[k].free
('anchor_attention', (0,), (1, 2))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.controller import controller_for, single_thread
from nasir.strategies.dedup import SeenArchitectures, fresh_sample
from nasir.strategies.rewards import AccuracyReward, Reward, make_reward

__all__ = ["ControllerStrategy"]


class ControllerStrategy(Strategy):
    """Base of controller strategies; subclasses implement :meth:`_learn`."""

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 reward: str | Mapping[str, Any] | None = None, lr: float = 0.0035,
                 hidden: int = 64, entropy: float = 0.0, temperature: float | None = None,
                 tanh_constant: float | None = None, max_tries: int = 20,
                 learn_repeats: bool = False, input_sampling: str = "anchor_attention",
                 anchor_keys: str = "own", skip_target: float = 0.4,
                 skip_weight: float = 0.0) -> None:
        super().__init__(space, seed, objective)
        self.reward: Reward = (AccuracyReward(key=objective) if reward is None
                               else make_reward(reward))
        self.controller = controller_for(
            [(d.kind, d.options) for d in space.decisions], self.rng,
            input_sampling=input_sampling, anchor_keys=anchor_keys, skip_target=skip_target,
            skip_weight=skip_weight, hidden=hidden, temperature=temperature,
            tanh_constant=tanh_constant)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.entropy_weight = float(entropy)
        self.max_tries = max(1, int(max_tries))
        self.learn_repeats = bool(learn_repeats)
        #: every setting of the run (what a stored state says ran; subclasses add theirs)
        self.settings: dict[str, Any] = {
            "reward": self.reward.spec(), "lr": lr, "hidden": hidden, "entropy": entropy,
            "temperature": temperature, "tanh_constant": tanh_constant,
            "max_tries": self.max_tries, "learn_repeats": self.learn_repeats,
            "input_sampling": input_sampling, "anchor_keys": anchor_keys,
            "skip_target": skip_target, "skip_weight": skip_weight}
        self.seen = SeenArchitectures(space)
        self._pending: dict[str, tuple[list[int], float]] = {}
        self.updates = 0
        self.free_experiences = 0

    # -- proposing --------------------------------------------------------------------
    def _one(self) -> Assignment:
        for _ in range(self.max_tries):
            idx, logp, _ = self.controller.sample(self.rng)
            a = self.space.from_indices(idx, {"controller": self.name})
            h = self.seen.key(a)
            if self.seen.add(a):
                self._pending[h] = (idx, logp)
                return a
            known = self.seen.known(a)
            if known is not None and self.learn_repeats:
                self.free_experiences += 1
                self._learn(idx, logp, known)
        a = fresh_sample(self.space, self.seen, self.rng)
        idx = self.space.indices(a)
        with torch.no_grad():
            logp = float(self.controller.log_prob([idx])[0][0])
        self._pending[self.seen.key(a)] = (idx, logp)
        return a

    def _propose(self, n: int) -> list[Assignment]:
        with single_thread():
            return [self._one() for _ in range(n)]

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        with single_thread():
            self._feedback_one(a, metrics)

    def _feedback_one(self, a: Assignment, metrics: dict[str, Any]) -> None:
        r = self.reward(metrics)
        h = self.seen.key(a)
        self.seen.record(a, r)
        got = self._pending.pop(h, None)
        if got is None:  # evaluated without being proposed here: score it under the policy
            idx = self.space.indices(a)
            with torch.no_grad():
                got = (idx, float(self.controller.log_prob([idx])[0][0]))
        self._learn(got[0], got[1], r)

    # -- learning -----------------------------------------------------------------------
    def _learn(self, idx: list[int], logp: float, reward: float) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The base state plus :attr:`settings`."""
        return {**super().state(), "settings": dict(self.settings)}

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.controller.invalidate()
        self.updates += 1

    def probabilities(self) -> list[np.ndarray]:
        """The greedy path's per-decision distributions (for inspection and tests): the
        softmax over a decision's options, or for an anchor decision each free
        candidate's probability of being an input."""
        with torch.no_grad(), single_thread():
            return self.controller.distributions()
