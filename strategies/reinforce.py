"""REINFORCE with a moving-average baseline (Zoph & Le, "Neural Architecture Search with
Reinforcement Learning", ICLR 2017) over an LSTM controller.

Each reward ``R`` gives the advantage ``R − b`` against an exponential moving average
``b ← decay · b + (1 − decay) · R`` of the earlier rewards (the first reward sets ``b``).
Every ``batch`` experiences the controller takes one Adam step on
``−mean((R − b) · log π(a)) − entropy · mean(H(π))`` (plus ENAS's skip penalty
``skip_weight · mean(KL)`` when ``skip_weight`` is set; 0 by default, NAS-RL has none).
Input decisions over subsets are sampled by anchor-point attention, one sigmoid per
earlier layer, as the paper's controller (``input_sampling="anchor_attention"``, the
default; ``"subset_softmax"`` is the older one-softmax-over-subsets variant).

Defaults are the ones tuned for a 150-query NB201 budget (see ``benchmarks/README.md``);
Zoph & Le used Adam with lr 0.0006 and reward = accuracy³ over thousands of models.

>>> from nasir.spaces import get_space
>>> s = Reinforce(get_space("nb201"), seed=0)
>>> a = s.propose(2)
>>> s.feedback(a[0], {"accuracy": 0.9}); s.feedback(a[1], {"accuracy": 0.5})
>>> s.updates
2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nasir.space import Space
from nasir.strategies.policy_search import ControllerStrategy

__all__ = ["Reinforce"]


class Reinforce(ControllerStrategy):
    """Policy-gradient controller search (REINFORCE, moving-average baseline)."""

    name: ClassVar[str] = "reinforce"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 reward: str | Mapping[str, Any] | None = None, lr: float = 0.0035,
                 baseline_decay: float = 0.95, batch: int = 1, entropy: float = 0.0,
                 hidden: int = 64, temperature: float | None = None,
                 tanh_constant: float | None = None, max_tries: int = 20,
                 learn_repeats: bool = False, input_sampling: str = "anchor_attention",
                 anchor_keys: str = "own", skip_target: float = 0.4,
                 skip_weight: float = 0.0) -> None:
        super().__init__(space, seed, objective, reward=reward, lr=lr, hidden=hidden,
                         entropy=entropy, temperature=temperature,
                         tanh_constant=tanh_constant, max_tries=max_tries,
                         learn_repeats=learn_repeats, input_sampling=input_sampling,
                         anchor_keys=anchor_keys, skip_target=skip_target,
                         skip_weight=skip_weight)
        self.baseline_decay = float(baseline_decay)
        self.batch = max(1, int(batch))
        self.baseline: float | None = None
        self._buffer: list[tuple[list[int], float]] = []
        self.settings.update(baseline_decay=self.baseline_decay, batch=self.batch)

    def _learn(self, idx: list[int], logp: float, reward: float) -> None:
        if self.baseline is None:
            self.baseline = reward
        adv = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._buffer.append((idx, adv))
        if len(self._buffer) < self.batch:
            return
        idxs = [b[0] for b in self._buffer]
        advs = [b[1] for b in self._buffer]
        self._buffer.clear()
        self._step(self.controller.loss(idxs, advs, entropy=self.entropy_weight))
