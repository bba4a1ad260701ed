"""DARTS (Liu et al., ICLR 2019): differentiable search by continuous relaxation.

Every decision becomes a softmax over its options (:class:`~nasir.backends.torch.supernet.
Supernet` in ``darts`` mode). Weights ``w`` and architecture logits ``α`` are trained
alternately on the two halves of the training split (bilevel optimisation):

* first order: ``α ← α − η_α ∇_α L_val(w, α)``;
* second order: the gradient at the one-step unrolled weights ``w' = w − ξ ∇_w L_train``,
  ``∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)``, the Hessian-vector
  product by central finite differences at ``w ± ε ∇_{w'} L_val`` (``ε = 0.01 / ‖·‖``).

The first ``warmup`` epochs train the weights only (as FBNet and ProxylessNAS do, and as
later DARTS variants do against the early lead of parameter-free ops): an architecture
step taken while the convolutions are still random compares untrained candidates.

Discretisation (:func:`discretize`): the argmax per decision over the options other than
``none`` (DARTS' derivation: ``none`` only scales the mixed output, its weight is not
compared); in cell spaces whose nodes read two operands (``…_in_a/_op_a/_in_b/_op_b``
decisions, DARTS/ENAS-micro spaces) each node keeps the two strongest *distinct* inputs,
each with its strongest non-``none`` op (DARTS' top-2 rule). ``none="keep"`` gives the
plain argmax NAS-Bench-201 used for its DARTS runs (``none`` included).

Selection (default ``select="pt"``): on digits the architecture weights of a short search
stay close to uniform and favour the parameter-free ``avg_pool``/``none`` (measured: max
softmax ≈ 0.3 after 8 epochs; argmax cells rank below the median random cell), so the
derived op of each edge is chosen by DARTS-PT's perturbation rule (Wang et al., ICLR 2021,
:func:`perturbation_select`): the op whose removal from the trained supernet costs the most
accuracy on (``pt_images`` of) the architecture half. ``select="argmax"`` is DARTS' own
rule. The candidates' BatchNorms are non-affine during the search (``affine=False``), as in
DARTS. Weight steps run with the logits frozen (their gradients would be discarded), and the
supernet does not run ``none`` candidates, options pinned off by DARTS-PT, or the same pool
of one state twice (:class:`~nasir.backends.torch.supernet.Supernet`).

Step sizes: DARTS takes ≈ 50 epochs × 390 architecture steps at lr 3e-4 (a logit can move
≈ 6); digits' search has tens of steps (≈ 9 per epoch on the architecture half), so the
default architecture lr (0.05) keeps that reachable distance, not the per-step size.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> r = DartsSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.1).search()
>>> sorted(r.assignment) == sorted(d.label for d in sp.decisions)
True
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.controller import single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    OneShotStrategy,
    SearchData,
    cycle,
    derive_from_probs,
    frozen_logits,
    on_device,
    search_data,
    set_arch_grads,
    weight_optimizer,
)

__all__ = ["Darts", "DartsSearch", "arch_probs", "discretize", "perturbation_select"]

_PAIR = re.compile(r"^(?P<node>.+)_in_a$")
_OP = re.compile(r"^.+_op_[ab]$")


def arch_probs(net: Supernet) -> dict[str, np.ndarray]:
    """Softmax of each decision's logits."""
    return {lb: F.softmax(net.alphas[lb.replace(".", "__")].detach(), -1).cpu().numpy()
            for lb in net.decisions()}


def discretize(net: Supernet, none: str = "exclude") -> dict[str, Any]:
    """Derive a discrete assignment (see the module docstring for the rules); ``none`` is
    the policy for ``none`` options of :func:`~nasir.strategies.oneshot.common.
    derive_from_probs` (DARTS: ``exclude``)."""
    opts = net.decisions()
    probs = arch_probs(net)
    out = derive_from_probs(net.space, probs, net.fixed, none=none)
    for lb in opts:
        if _OP.match(lb) and "none" in opts[lb] and len(opts[lb]) > 1:
            p = probs[lb].copy()
            p[list(opts[lb]).index("none")] = -1.0
            out[lb] = opts[lb][int(np.argmax(p))]
    for lb in opts:
        m = _PAIR.match(lb)
        other = f"{m['node']}_in_b" if m else ""
        if m is None or other not in opts:
            continue
        pa, pb = probs[lb], probs[other]
        joint = np.outer(pa, pb)
        for k in range(min(len(pa), len(pb))):
            joint[k, k] = -1.0  # two distinct inputs
        if joint.max() < 0:
            continue
        i, j = (int(v) for v in np.unravel_index(int(np.argmax(joint)), joint.shape))
        out[lb], out[other] = opts[lb][i], opts[other][j]
    return out


_IN = re.compile(r"^.+_in_[ab]$")


def perturbation_select(net: Supernet, batches: list[tuple[Any, Any]],
                        tune: Any = None, seed: int = 0, none: str = "exclude"
                        ) -> dict[str, Any]:
    """DARTS-PT selection (Wang et al., ICLR 2021): per decision (random order), drop each
    candidate from its mixed op in turn and keep the one whose removal costs the supernet
    the most accuracy on ``batches``; pin it (one-hot) and, with ``tune``, fine-tune the
    weights before the next decision. Input decisions of two-operand cells are left to
    :func:`discretize`. Returns ``{label: option}`` for the decisions it selected.

    The architecture logits are left pinned (``-inf`` off the chosen option).
    """
    opts = net.decisions()
    labels = [lb for lb in opts if not _IN.match(lb) and len(opts[lb]) > 1]
    order = np.random.default_rng(seed).permutation(len(labels))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    chosen: dict[str, Any] = {}

    @torch.no_grad()
    def acc() -> float:
        net.train()  # batch statistics: running ones describe the unmasked supernet
        return float((net(x).argmax(1) == y).float().mean())

    for k in order:
        lb = labels[int(k)]
        alpha = net.alphas[lb.replace(".", "__")]
        keep = alpha.detach().clone()
        cands = [i for i, o in enumerate(opts[lb])
                 if none == "keep" or not (isinstance(o, str) and o in ("none", "zero"))]
        scores = {}
        for i in cands:
            with torch.no_grad():
                alpha.copy_(keep)
                alpha[i] = float("-inf")
            scores[i] = acc()
        best = min(scores, key=lambda i: scores[i])
        with torch.no_grad():
            alpha.fill_(float("-inf"))
            alpha[best] = 0.0
        chosen[lb] = opts[lb][best]
        if tune is not None:
            tune()
    return chosen


class DartsSearch:
    """DARTS on a space's supernet.

    Args:
        space: the search space (decisions that change types must be pinned in ``fixed``).
        seed: seeds weights, data order and sampling.
        epochs: passes over the weight half of the training split (``warmup`` included).
        warmup: leading epochs that train the weights only.
        order: 1 (first-order) or 2 (second-order, unrolled).
        none: derivation policy for ``none`` options (``exclude``, ``connect``, ``keep``).
        affine: BatchNorm affine parameters in the candidates (DARTS searches without).
        select: ``argmax`` of the architecture weights (DARTS) or ``pt``, the
            perturbation-based selection of DARTS-PT (:func:`perturbation_select`) on the
            architecture half, with ``pt_tune_steps`` weight steps after each decision.
        pt_images: images of the architecture half each perturbation is scored on (the
            first ones of its shuffled order; ``None``: all of it). DARTS-PT scores every
            candidate of every edge (24 supernet evaluations on NB201): on all 539 images
            that is ≈ 0.8× the cost of training a child, on 256 ≈ 0.35×.
        w_lr, a_lr, a_weight_decay: weight SGD / architecture Adam settings (DARTS').
        data_fraction: fraction of the training split used (both halves).
        device: where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``).
    """

    method: ClassVar[str] = "darts"

    def __init__(self, space: Space, seed: int = 0, *, epochs: int = 8, warmup: int = 2,
                 order: int = 1, w_lr: float = 3e-3, w_momentum: float = 0.9,
                 w_optimizer: str = "adam", w_weight_decay: float = 0.0,
                 a_lr: float = 5e-2, a_weight_decay: float = 1e-3, batch_size: int = 64,
                 none: str = "exclude", affine: bool = False, select: str = "pt",
                 pt_tune_steps: int = 0, pt_images: int | None = 256,
                 data_fraction: float = 1.0, fixed: Mapping[str, Any] | None = None,
                 unroll_xi: float | None = None, grad_clip: float = 5.0,
                 device: str = "cpu") -> None:
        if order not in (1, 2):
            raise SpecError(f"DARTS order must be 1 or 2, got {order!r}",
                            hint="order=1 (first-order) or order=2 (unrolled)")
        if epochs < 1 or not 0 <= warmup < epochs:
            raise SpecError(f"need epochs >= 1 and 0 <= warmup < epochs, got {epochs}, "
                            f"{warmup}", hint="e.g. epochs=8, warmup=2")
        if none not in ("exclude", "connect", "keep"):
            raise SpecError(f"unknown none policy {none!r}",
                            hint="use 'exclude', 'connect' or 'keep'")
        if select not in ("argmax", "pt"):
            raise SpecError(f"unknown DARTS selection {select!r}",
                            hint="use 'argmax' (DARTS) or 'pt' (DARTS-PT)")
        self.warmup, self.none, self.affine = int(warmup), none, bool(affine)
        if pt_images is not None and pt_images < 1:
            raise SpecError(f"pt_images must be >= 1 (or None: all), got {pt_images}")
        self.select, self.pt_tune_steps, self.pt_images = select, int(pt_tune_steps), pt_images
        self.space, self.seed, self.epochs, self.order = space, int(seed), int(epochs), order
        self.w_lr, self.w_momentum, self.w_wd = w_lr, w_momentum, w_weight_decay
        self.w_optimizer = w_optimizer
        self.a_lr, self.a_wd = a_lr, a_weight_decay
        self.batch_size, self.data_fraction = batch_size, data_fraction
        self.fixed = dict(fixed or {})
        self.xi = (w_lr if w_optimizer == "sgd" else 0.05) if unroll_xi is None else unroll_xi
        self.grad_clip = grad_clip
        self.device = resolve_device(device)
        self.net: Supernet | None = None

    def _build(self) -> Supernet:
        torch.manual_seed(self.seed)
        return Supernet(self.space, mode="darts", seed=self.seed, fixed=self.fixed,
                        affine=self.affine, per_input_ops=True).to(self.device)

    def _arch_grad_unrolled(self, net: Supernet, xw: Any, yw: Any, xa: Any, ya: Any
                            ) -> list[torch.Tensor]:
        w, a = net.weight_parameters(), net.arch_parameters()
        backup = [p.detach().clone() for p in w]
        gw = torch.autograd.grad(F.cross_entropy(net(xw), yw), w, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(w, gw):
                if g is not None:
                    p.sub_(self.xi * (g + self.w_wd * p))
        grads = torch.autograd.grad(F.cross_entropy(net(xa), ya), a + w, allow_unused=True)
        ga, dw = grads[:len(a)], grads[len(a):]
        with torch.no_grad():
            for p, b in zip(w, backup):
                p.copy_(b)
        norm = torch.sqrt(sum((g * g).sum() for g in dw if g is not None))  # type: ignore[misc]
        eps = 0.01 / (float(norm) + 1e-12)

        def shifted(sign: float) -> tuple[torch.Tensor | None, ...]:
            with torch.no_grad():
                for p, g, b in zip(w, dw, backup):
                    if g is not None:
                        p.copy_(b + sign * eps * g)
            return torch.autograd.grad(F.cross_entropy(net(xw), yw), a, allow_unused=True)

        gp, gm = shifted(1.0), shifted(-1.0)
        with torch.no_grad():
            for p, b in zip(w, backup):
                p.copy_(b)
        out = []
        for g0, p1, m1, p in zip(ga, gp, gm, a):
            g = torch.zeros_like(p) if g0 is None else g0
            if p1 is not None and m1 is not None:
                g = g - self.xi * (p1 - m1) / (2 * eps)
            out.append(g)
        return out

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Run the bilevel optimisation and discretise; see the module docstring."""
        t0 = time.perf_counter()
        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else search_data(
                self.batch_size, self.seed, self.data_fraction, self.device)
            net = self.net = self._build()
            wopt = weight_optimizer(net, self.w_optimizer, self.w_lr, self.w_momentum,
                                    self.w_wd)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                wopt, self.epochs * len(data.train_w), eta_min=self.w_lr / 50)
            aopt = torch.optim.Adam(net.arch_parameters(), lr=self.a_lr, betas=(0.5, 0.999),
                                    weight_decay=self.a_wd)
            arch_it = cycle(data.train_a)
            history: list[dict[str, Any]] = []
            for ep in range(self.epochs):
                net.train()
                losses = []
                for xw, yw in data.train_w:
                    if ep >= self.warmup:
                        xa, ya = next(arch_it)
                        aopt.zero_grad()
                        if self.order == 1:
                            set_arch_grads(net, F.cross_entropy(net(xa), ya))
                        else:
                            for p, g in zip(net.arch_parameters(),
                                            self._arch_grad_unrolled(net, xw, yw, xa, ya)):
                                p.grad = g
                        aopt.step()
                    wopt.zero_grad()
                    with frozen_logits(net):
                        loss = F.cross_entropy(net(xw), yw)
                        loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), self.grad_clip)
                    wopt.step()
                    sched.step()
                    losses.append(loss.item())
                history.append({"epoch": ep, "loss": float(np.mean(losses)),
                                "derived": Assignment(discretize(net, self.none)).to_json()})
            selected: dict[str, Any] = {}
            if self.select == "pt":
                w_it = cycle(data.train_w)

                def tune() -> None:
                    with frozen_logits(net):
                        for _ in range(self.pt_tune_steps):
                            xw, yw = next(w_it)
                            wopt.zero_grad()
                            F.cross_entropy(net(xw), yw).backward()
                            torch.nn.utils.clip_grad_norm_(net.weight_parameters(),
                                                           self.grad_clip)
                            wopt.step()

                batches = list(data.train_a)
                if self.pt_images is not None:
                    x = torch.cat([b[0] for b in batches])[:self.pt_images]
                    y = torch.cat([b[1] for b in batches])[:self.pt_images]
                    batches = [(x, y)]
                selected = perturbation_select(net, batches, tune, self.seed, self.none)
            a = self.space.check(discretize(net, self.none) | selected)
        probs = {k: v.round(4).tolist() for k, v in arch_probs(net).items()}
        return OneShotResult(self.method, a, time.perf_counter() - t0, self.epochs, history,
                             {"arch_probs": probs, "order": self.order,
                              "device": str(self.device)})


class Darts(OneShotStrategy):
    """Registry entry ``darts``: ``propose`` runs :class:`DartsSearch` once and returns the
    derived assignment (options go to :class:`DartsSearch`)."""

    name: ClassVar[str] = "darts"
    search_cls = DartsSearch
