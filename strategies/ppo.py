"""PPO over an LSTM controller, as the controller updates of NASNet (Zoph et al., CVPR
2018) and MnasNet (Tan et al., CVPR 2019).

Experiences are collected in batches of ``batch``; each reward's advantage is taken
against an exponential moving-average baseline. Every full batch is then used for
``epochs`` Adam steps on the clipped surrogate
``−mean(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)) − entropy · mean(H)``, where
``ρ = π(a) / π_old(a)`` and ``π_old`` is the policy that sampled ``a`` (plus ENAS's skip
penalty ``skip_weight · mean(KL)`` when ``skip_weight`` is set; 0 by default). With a MnasNet
reward spec (:mod:`nasir.strategies.rewards`) this is MnasNet's search.

>>> from nasir.spaces import get_space
>>> s = PPO(get_space("nb201"), seed=0, batch=2, epochs=3)
>>> for a, acc in zip(s.propose(2), (0.9, 0.5)):
...     s.feedback(a, {"accuracy": acc})
>>> s.updates
3
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.policy_search import ControllerStrategy

__all__ = ["PPO"]


class PPO(ControllerStrategy):
    """Proximal policy optimisation of the controller (clipped surrogate)."""

    name: ClassVar[str] = "ppo"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 reward: str | Mapping[str, Any] | None = None, lr: float = 0.0035,
                 batch: int = 5, epochs: int = 4, clip: float = 0.2,
                 baseline_decay: float = 0.95, entropy: float = 0.0, hidden: int = 64,
                 temperature: float | None = None, tanh_constant: float | None = None,
                 max_tries: int = 20, learn_repeats: bool = False,
                 input_sampling: str = "anchor_attention", anchor_keys: str = "own",
                 skip_target: float = 0.4, skip_weight: float = 0.0) -> None:
        super().__init__(space, seed, objective, reward=reward, lr=lr, hidden=hidden,
                         entropy=entropy, temperature=temperature,
                         tanh_constant=tanh_constant, max_tries=max_tries,
                         learn_repeats=learn_repeats, input_sampling=input_sampling,
                         anchor_keys=anchor_keys, skip_target=skip_target,
                         skip_weight=skip_weight)
        if not 0 < clip < 1:
            raise SpecError(f"PPO clip must lie in (0, 1), got {clip}", hint="0.2 is usual")
        self.batch = max(1, int(batch))
        self.epochs = max(1, int(epochs))
        self.clip = float(clip)
        self.baseline_decay = float(baseline_decay)
        self.baseline: float | None = None
        self._buffer: list[tuple[list[int], float, float]] = []
        self.settings.update(batch=self.batch, epochs=self.epochs, clip=self.clip,
                             baseline_decay=self.baseline_decay)

    def _learn(self, idx: list[int], logp: float, reward: float) -> None:
        if self.baseline is None:
            self.baseline = reward
        adv = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._buffer.append((idx, logp, adv))
        if len(self._buffer) < self.batch:
            return
        idxs = [b[0] for b in self._buffer]
        old = torch.tensor([b[1] for b in self._buffer], dtype=torch.float32)
        advs = torch.tensor([b[2] for b in self._buffer], dtype=torch.float32)
        self._buffer.clear()
        for _ in range(self.epochs):
            sc = self.controller.scores(idxs)
            ratio = torch.exp(sc.log_prob - old)
            surr = torch.minimum(ratio * advs,
                                 torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * advs)
            self._step(-surr.mean() - self.entropy_weight * sc.entropy.mean()
                       + self.controller.penalty(sc))
