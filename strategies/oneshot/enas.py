"""ENAS (Pham et al., ICML 2018): an LSTM controller over one weight-sharing supernet.

The supernet runs in ``single`` mode: each weight step trains the path the controller
samples (shared weights, one child's compute). Each epoch alternates

1. one pass over the weight half of the training split, a fresh sampled child per batch
   (SGD with Nesterov momentum, the learning rate set once an epoch by cosine annealing
   with warm restarts);
2. ``controller_steps`` controller updates, each the mean REINFORCE gradient of
   ``controller_samples`` children: reward = a child's accuracy with the shared weights on
   one batch of the architecture half plus ``entropy`` × its sample entropy, advantage
   against a moving-average baseline updated after every child
   (:class:`~nasir.strategies.controller.Controller`; skip inputs by anchor attention with
   ENAS's KL skip penalty, :func:`~nasir.strategies.controller.enas_controller`).

Derivation (the paper's §2.2; ``main.py`` prints 10 such children): ``derive_samples``
children sampled from the trained controller are each scored with the shared weights on
one batch of the architecture half; the best is returned. Shared-weight accuracies use
BatchNorm batch statistics: the running statistics average all sampled paths and
misdescribe any one child.

**Variants** (:data:`VARIANTS`; each a frozen :class:`EnasSettings`, options override
single settings, and every run records ``variant``, all ``settings`` and what the options
``changed`` in its result's ``extra`` and the strategy's ``state()``):

``enas_macro`` — the official macro search, melodyguan/enas
``scripts/cifar10_macro_search.sh`` with ``src/cifar10/main.py``'s defaults for the flags
it leaves out (line numbers at :class:`EnasSettings`): 310 epochs, batch 128; shared
weights SGD, Nesterov momentum 0.9, lr 0.05 → 0.0005 cosine with warm restarts T₀ = 10,
T_mul = 2 epochs; l2 2.5e-4 (``weight_decay`` 5e-4: the code adds ``l2·Σw²`` to the loss);
controller Adam lr 0.001 (β₁ = 0, ε = 1e-3), 50 updates an epoch of 20 children each,
entropy 1e-4 in the reward, baseline decay 0.99 from 0, tanh constant 1.5, no temperature,
skip target 0.4 weighted 0.8.

``enas_micro`` — the official micro search (``scripts/cifar10_micro_search.sh``): 150
epochs, batch 160, l2 1e-4 (``weight_decay`` 2e-4), controller lr 0.0035, 30 updates an
epoch of 10 children each, tanh constant 1.10 with the op decisions' divided by
``op_tanh_reduce`` 2.5, no skip penalty (the micro controller has none); the rest as macro.

``enas_adam`` — what ``enas`` ran before issue 21, tuned to digits' few steps: 150 epochs,
batch 64, weights Adam lr 3e-3 cosine per step to lr/50, no weight decay, gradient norm
clipped at 5; controller Adam lr 3.5e-3 (torch's betas), 20 updates an epoch of one child,
entropy 1e-3 in the loss, baseline decay 0.95 from the first reward, tanh constant 1.5;
derivation: the greedy child and 9 samples, each scored on the whole architecture half.
The benchmarks whose figures were measured with it pass ``variant="enas_adam"``.

``variant="enas"`` (the default, and the registry's ``enas``) picks by the space: the
space named ``enas_macro`` or ``enas_micro`` takes its own; another space takes the macro
settings when it has skip-subset input decisions (``select_any``, the macro controller's
anchor points) and the micro (cell search) settings otherwise (NB201, cell spaces). The
epochs are the paper's: runners and tests pass ``epochs`` (and smaller ``controller_*``)
for their budget.

Not reproduced (the official search differs here): the controller's reward batch comes
from the training split's architecture half, not a held-out validation split; the macro
child scores rewards with BatchNorm's moving statistics (``general_child.py:691``), here
batch statistics as the micro child (``micro_child.py:804``); the micro controller picks a
node's inputs by attention over earlier nodes' states and starts its op logits biased to
the separable convolutions (``micro_controller.py:100-109``), here a softmax head per
input decision and no bias; the macro controller's "entropy" is ``−p·log p`` of the chosen
options only (``general_controller.py:168``), here the full entropy; gradient clipping is
off because the code's is a no-op (``utils.py:149`` keeps the unclipped gradient);
auxiliary heads, drop-path and the child's dropout belong to the space's supernet.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> r = EnasSearch(sp, seed=0, epochs=1, data_fraction=0.1, controller_steps=3,
...                controller_samples=2, derive_samples=2).search()
>>> sorted(r.assignment) == sorted(d.label for d in sp.decisions)
True
>>> r.extra["variant"], r.extra["settings"]["op_tanh_reduce"], r.extra["settings"]["c_lr"]
('enas_micro', 2.5, 0.0035)
>>> sorted(r.extra["changed"])  # doctest: +NORMALIZE_WHITESPACE
['controller_samples', 'controller_steps', 'data_fraction', 'derive_samples', 'epochs']
"""

from __future__ import annotations

import dataclasses
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
from nasir.strategies.controller import (
    Controller,
    enas_controller,
    single_thread,
)
from nasir.strategies.oneshot.common import (
    OneShotResult,
    SearchData,
    cycle,
    on_device,
    search_data,
    weight_optimizer,
)
from nasir.strategies.oneshot.enas_settings import (
    ENAS_ADAM,
    ENAS_MACRO,
    ENAS_MICRO,
    VARIANTS,
    EnasSettings,
    sgdr_lr,
    space_variant,
)

__all__ = ["ENAS_ADAM", "ENAS_MACRO", "ENAS_MICRO", "VARIANTS", "EnasSearch",
           "EnasSettings", "sgdr_lr", "space_variant"]

class EnasSearch:
    """ENAS on a space's supernet (see the module docstring).

    Args:
        space: the search space (type-changing decisions pinned in ``fixed``).
        seed: seeds weights, controller, data order and sampling.
        variant: ``enas`` (by the space: ``enas_macro`` or ``enas_micro``, see
            :func:`space_variant`), or a name of :data:`VARIANTS`.
        fixed: decisions pinned to one value.
        device: where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``;
            the controller stays on the CPU).
        **options: single :class:`EnasSettings` fields overriding the variant's (``epochs``
            to fit a budget: the default is the paper's).
    """

    method: ClassVar[str] = "enas"

    def __init__(self, space: Space, seed: int = 0, *, variant: str = "enas",
                 fixed: Mapping[str, Any] | None = None, device: str = "cpu",
                 **options: Any) -> None:
        name = space_variant(space) if variant == "enas" else variant
        if name not in VARIANTS:
            raise SpecError(f"unknown ENAS variant {variant!r}",
                            hint=f"use 'enas' (by the space) or one of {', '.join(VARIANTS)}")
        names = [f.name for f in dataclasses.fields(EnasSettings)]
        bad = sorted(set(options) - set(names))
        if bad:
            raise SpecError(f"unknown ENAS option(s): {', '.join(bad)}",
                            hint=f"settings: {', '.join(names)}")
        cfg = dataclasses.replace(VARIANTS[name], **options)
        #: the variant's name (resolved by the space for ``enas``) and its settings
        self.variant, self.settings = name, cfg
        #: the settings the options changed from the variant's
        self.changed = cfg.changed_from(VARIANTS[name])
        self.space, self.seed, self.epochs = space, int(seed), cfg.epochs
        self.fixed = dict(fixed or {})
        self.device = resolve_device(device)
        self.net: Supernet | None = None
        self._baseline: float | None = None

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

    def _controller(self, net: Supernet, rng: np.random.Generator) -> Controller:
        cfg = self.settings
        return enas_controller(
            self.space, net.decisions(), rng, hidden=cfg.hidden,
            tanh_constant=cfg.tanh_constant, temperature=cfg.temperature,
            op_tanh_reduce=cfg.op_tanh_reduce, input_sampling=cfg.input_sampling,
            anchor_keys=cfg.anchor_keys, skip_target=cfg.skip_target,
            skip_weight=cfg.skip_weight, skip_logit_scale=cfg.skip_logit_scale)

    def _weight_optimizer(self, net: Supernet) -> torch.optim.Optimizer:
        cfg = self.settings
        if cfg.w_optimizer == "sgd":
            return torch.optim.SGD(net.weight_parameters(), lr=cfg.w_lr,
                                   momentum=cfg.w_momentum, nesterov=cfg.w_nesterov,
                                   weight_decay=cfg.w_weight_decay)
        return weight_optimizer(net, cfg.w_optimizer, cfg.w_lr, cfg.w_momentum,
                                cfg.w_weight_decay)

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Train shared weights and controller alternately, then derive."""
        cfg = self.settings
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else search_data(
                cfg.batch_size, self.seed, cfg.data_fraction, self.device)
            net = self.net = Supernet(self.space, mode="single", seed=self.seed,
                                      fixed=self.fixed, per_input_ops=True).to(self.device)
            labels = list(net.decisions())
            ctrl = self._controller(net, rng)
            copt = torch.optim.Adam(ctrl.parameters(), lr=cfg.c_lr, betas=cfg.c_betas,
                                    eps=cfg.c_eps)
            wopt = self._weight_optimizer(net)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                wopt, cfg.epochs * len(data.train_w), eta_min=cfg.w_lr_min) \
                if cfg.lr_schedule == "cosine" else None
            arch_it = cycle(data.train_a)
            self._baseline = cfg.baseline_init
            history: list[dict[str, Any]] = []
            for ep in range(cfg.epochs):
                if sched is None:
                    for g in wopt.param_groups:
                        g["lr"] = sgdr_lr(ep, cfg.w_lr, cfg.w_lr_min, cfg.lr_t0, cfg.lr_t_mul)
                lr = wopt.param_groups[0]["lr"]
                losses = self._train_weights(net, ctrl, labels, data, wopt, sched, rng)
                rewards = [r for _ in range(cfg.controller_steps)
                           for r in self._train_controller(net, ctrl, copt, labels, arch_it,
                                                           rng)]
                history.append({"epoch": ep, "loss": float(np.mean(losses)), "w_lr": lr,
                                "reward": float(np.mean(rewards)) if rewards else None})
            a, scores = self._derive(net, ctrl, labels, data, arch_it, rng)
        anchors = sum(s is not None for s in ctrl.inputs)
        return OneShotResult(self.method, self.space.check(a), time.perf_counter() - t0,
                             cfg.epochs, history,
                             {"derive_scores": scores, "device": str(self.device),
                              "variant": self.variant, "settings": cfg.to_json(),
                              "changed": dict(self.changed), "anchor_decisions": anchors})

    def _train_weights(self, net: Supernet, ctrl: Controller, labels: list[str],
                       data: SearchData, wopt: torch.optim.Optimizer, sched: Any,
                       rng: np.random.Generator) -> list[float]:
        """One pass over the weight half, a freshly sampled child per batch."""
        cfg = self.settings
        net.train()
        losses = []
        for x, y in data.train_w:
            self._path(net, labels, ctrl.sample(rng)[0])
            wopt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
            wopt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
        return losses

    def _train_controller(self, net: Supernet, ctrl: Controller,
                          copt: torch.optim.Optimizer, labels: list[str], arch_it: Any,
                          rng: np.random.Generator) -> list[float]:
        """One controller update over ``controller_samples`` children; their accuracies."""
        cfg = self.settings
        seqs, advantages, accs = [], [], []
        for _ in range(cfg.controller_samples):
            idx, _, ent = ctrl.sample(rng)
            self._path(net, labels, idx)
            acc = self._accuracy(net, [next(arch_it)])
            r = acc + cfg.entropy * ent if cfg.entropy_in == "reward" else acc
            b = self._baseline
            self._baseline = r if b is None else cfg.baseline_decay * b + \
                (1 - cfg.baseline_decay) * r
            seqs.append(idx)
            advantages.append(r - self._baseline)
            accs.append(acc)
        copt.zero_grad()
        ctrl.loss(seqs, advantages,
                  entropy=cfg.entropy if cfg.entropy_in == "loss" else 0.0).backward()
        copt.step()
        ctrl.invalidate()  # sampling reads a numpy copy of the weights
        return accs

    def _derive(self, net: Supernet, ctrl: Controller, labels: list[str], data: SearchData,
                arch_it: Any, rng: np.random.Generator
                ) -> tuple[dict[str, Any], list[float]]:
        cfg = self.settings
        whole = list(data.train_a) if cfg.derive_batches is None else None
        cands = [ctrl.sample(rng, greedy=True)[0]] if cfg.derive_greedy else []
        cands += [ctrl.sample(rng)[0] for _ in range(cfg.derive_samples - len(cands))]
        scores = []
        for idx in cands:
            self._path(net, labels, idx)
            batches = whole if whole is not None else \
                [next(arch_it) for _ in range(cfg.derive_batches or 1)]
            scores.append(self._accuracy(net, batches))
        best = cands[int(np.argmax(scores))]
        return self._path(net, labels, best), scores

