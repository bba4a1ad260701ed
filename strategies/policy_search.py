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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.controller import Controller, single_thread
from nasir.strategies.dedup import SeenArchitectures, fresh_sample
from nasir.strategies.rewards import AccuracyReward, Reward, make_reward

__all__ = ["ControllerStrategy"]


class ControllerStrategy(Strategy):
    """Base of controller strategies; subclasses implement :meth:`_learn`."""

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 reward: str | Mapping[str, Any] | None = None, lr: float = 0.0035,
                 hidden: int = 64, entropy: float = 0.0, temperature: float | None = None,
                 tanh_constant: float | None = None, max_tries: int = 20,
                 learn_repeats: bool = False) -> None:
        super().__init__(space, seed, objective)
        self.reward: Reward = (AccuracyReward(key=objective) if reward is None
                               else make_reward(reward))
        self.controller = Controller([d.size for d in space.decisions], rng=self.rng,
                                     hidden=hidden, temperature=temperature,
                                     tanh_constant=tanh_constant)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.entropy_weight = float(entropy)
        self.max_tries = max(1, int(max_tries))
        self.learn_repeats = bool(learn_repeats)
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

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.controller.invalidate()
        self.updates += 1

    def probabilities(self) -> list[np.ndarray]:
        """The greedy path's per-decision distributions (for inspection and tests)."""
        out = []
        with torch.no_grad(), single_thread():
            idx, _, _ = self.controller.sample(self.rng, greedy=True)
            h = torch.zeros(1, self.controller.hidden)
            c = torch.zeros(1, self.controller.hidden)
            x = self.controller.embed(torch.tensor([self.controller.start]))
            for k in range(len(self.controller.sizes)):
                h, c = self.controller.cell(x, (h, c))
                out.append(torch.softmax(self.controller._logits(k, h), -1)[0].numpy())
                x = self.controller.embed(torch.tensor([int(self.controller.offsets[k])
                                                        + idx[k]]))
        return out
