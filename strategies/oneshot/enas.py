"""ENAS (Pham et al., ICML 2018): an LSTM controller over one weight-sharing supernet.

The supernet runs in ``single`` mode: each weight step trains the path the controller
samples (shared weights, one child's compute). Each epoch alternates

1. one pass over the weight half of the training split, a fresh sampled child per batch;
2. ``controller_steps`` REINFORCE steps: sample a child, reward = its accuracy with the
   shared weights on a batch of the architecture half, advantage against a moving-average
   baseline, plus an entropy bonus (:class:`~nasir.strategies.controller.Controller`, the
   RL controller of the black-box strategies; skip inputs by anchor attention with ENAS's
   KL skip penalty, :func:`~nasir.strategies.controller.enas_controller`).

Derivation (as ENAS): ``derive_samples`` children sampled from the trained controller (its
greedy choice among them) are scored with shared weights on the whole architecture half;
the best is returned. Shared-weight accuracies (rewards and derivation) use BatchNorm
batch statistics: the running statistics average all sampled paths and misdescribe any
one child. Works on macro (``enas_macro``) and cell (``enas_micro``, NB201)
spaces alike: the controller emits one decision per step over the free decisions.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> r = EnasSearch(sp, seed=0, epochs=1, data_fraction=0.1, controller_steps=3,
...                derive_samples=2).search()
>>> sorted(r.assignment) == sorted(d.label for d in sp.decisions)
True
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.controller import Controller, enas_controller, single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    OneShotStrategy,
    SearchData,
    cycle,
    on_device,
    search_data,
    weight_optimizer,
)

__all__ = ["Enas", "EnasSearch"]


class EnasSearch:
    """ENAS on a space's supernet (see the module docstring).

    Args:
        space: the search space (type-changing decisions pinned in ``fixed``).
        seed: seeds weights, controller, data order and sampling.
        epochs: alternations (one weight pass + ``controller_steps`` controller steps);
            150 as in the paper. On digits an epoch is ≈ 9 weight steps: with 5-8 epochs
            the shared weights are barely trained (children score 10-60 % with them) and
            the rewards rank pass-through cells first (notes/issue-9.md).
        w_lr: shared-weight SGD learning rate (cosine-annealed).
        c_lr, entropy, baseline_decay, tanh_constant: controller settings (ENAS').
        device: where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``;
            the controller stays on the CPU).
    """

    method: ClassVar[str] = "enas"

    def __init__(self, space: Space, seed: int = 0, *, epochs: int = 150,
                 controller_steps: int = 20, derive_samples: int = 10, w_lr: float = 3e-3,
                 w_momentum: float = 0.9, w_optimizer: str = "adam",
                 w_weight_decay: float = 0.0, c_lr: float = 3.5e-3,
                 entropy: float = 1e-3, baseline_decay: float = 0.95,
                 tanh_constant: float | None = 1.5, batch_size: int = 64,
                 data_fraction: float = 1.0, fixed: Mapping[str, Any] | None = None,
                 device: str = "cpu") -> None:
        if epochs < 1 or controller_steps < 0 or derive_samples < 1:
            raise SpecError("ENAS needs epochs >= 1, controller_steps >= 0, "
                            "derive_samples >= 1")
        self.space, self.seed, self.epochs = space, int(seed), int(epochs)
        self.controller_steps, self.derive_samples = controller_steps, derive_samples
        self.w_lr, self.w_momentum, self.w_wd = w_lr, w_momentum, w_weight_decay
        self.w_optimizer = w_optimizer
        self.c_lr, self.entropy, self.decay = c_lr, entropy, baseline_decay
        self.tanh_constant = tanh_constant
        self.batch_size, self.data_fraction = batch_size, data_fraction
        self.fixed = dict(fixed or {})
        self.device = resolve_device(device)
        self.net: Supernet | None = None

    def _path(self, net: Supernet, labels: list[str], idx: list[int]) -> dict[str, Any]:
        opts = net.decisions()
        a = {lb: opts[lb][i] for lb, i in zip(labels, idx)} | self.fixed
        net.set_path(a)
        return a

    @torch.no_grad()
    def _accuracy(self, net: Supernet, batches: list[tuple[Any, Any]]) -> float:
        # BatchNorm on batch statistics: the running ones average every sampled path and
        # misdescribe any single child (the reason SPOS recalibrates them per path)
        net.train()
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        return float((net(x).argmax(1) == y).float().mean()) if len(y) else 0.0

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Train shared weights and controller alternately, then derive."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else search_data(
                self.batch_size, self.seed, self.data_fraction, self.device)
            net = self.net = Supernet(self.space, mode="single", seed=self.seed,
                                      fixed=self.fixed, per_input_ops=True).to(self.device)
            labels = list(net.decisions())
            ctrl = enas_controller(self.space, net.decisions(), rng,
                                   tanh_constant=self.tanh_constant)
            copt = torch.optim.Adam(ctrl.parameters(), lr=self.c_lr)
            wopt = weight_optimizer(net, self.w_optimizer, self.w_lr, self.w_momentum,
                                    self.w_wd)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                wopt, self.epochs * len(data.train_w), eta_min=self.w_lr / 50)
            arch_it = cycle(data.train_a)
            baseline: float | None = None
            history: list[dict[str, Any]] = []
            for ep in range(self.epochs):
                net.train()
                losses = []
                for x, y in data.train_w:
                    self._path(net, labels, ctrl.sample(rng)[0])
                    wopt.zero_grad()
                    loss = F.cross_entropy(net(x), y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
                    wopt.step()
                    sched.step()
                    losses.append(loss.item())
                rewards = []
                for _ in range(self.controller_steps):
                    idx, _, _ = ctrl.sample(rng)
                    self._path(net, labels, idx)
                    r = self._accuracy(net, [next(arch_it)])
                    baseline = r if baseline is None else \
                        self.decay * baseline + (1 - self.decay) * r
                    copt.zero_grad()
                    ctrl.loss([idx], [r - baseline], entropy=self.entropy).backward()
                    copt.step()
                    ctrl.invalidate()  # sampling reads a numpy copy of the weights
                    rewards.append(r)
                history.append({"epoch": ep, "loss": float(np.mean(losses)),
                                "reward": float(np.mean(rewards)) if rewards else None})
            a, scores = self._derive(net, ctrl, labels, data, rng)
        return OneShotResult(self.method, self.space.check(a), time.perf_counter() - t0,
                             self.epochs, history,
                             {"derive_scores": scores, "device": str(self.device)})

    def _derive(self, net: Supernet, ctrl: Controller, labels: list[str], data: SearchData,
                rng: np.random.Generator) -> tuple[dict[str, Any], list[float]]:
        batches = list(data.train_a)
        cands = [ctrl.sample(rng, greedy=True)[0]]
        cands += [ctrl.sample(rng)[0] for _ in range(self.derive_samples - 1)]
        scores = []
        for idx in cands:
            self._path(net, labels, idx)
            scores.append(self._accuracy(net, batches))
        best = cands[int(np.argmax(scores))]
        return self._path(net, labels, best), scores


class Enas(OneShotStrategy):
    """Registry entry ``enas``: ``propose`` runs :class:`EnasSearch` once and returns the
    derived assignment."""

    name: ClassVar[str] = "enas"
    search_cls = EnasSearch
