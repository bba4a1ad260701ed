"""DARTS (Liu et al., ICLR 2019): differentiable search by continuous relaxation.

Every decision becomes a softmax over its options (:class:`~nasir.backends.torch.supernet.
Supernet` in ``darts`` mode). Weights ``w`` and architecture logits ``α`` are trained
alternately on the two halves of the training split (bilevel optimisation):

* first order: ``α ← α − η_α ∇_α L_val(w, α)``;
* second order: the gradient at the one-step unrolled weights
  ``w' = w − ξ (μ·m + ∇_w L_train + λ w)`` (``ξ`` the current weight lr, ``m`` the SGD
  momentum buffer, ``λ`` the weight decay, as quark0/darts' ``architect.py``),
  ``∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)``, the Hessian-vector
  product by central finite differences at ``w ± ε ∇_{w'} L_val`` (``ε = 0.01 / ‖·‖``).

**Variants** (registry names; each a frozen :class:`DartsSettings`, options override single
settings, and every run records ``variant``, all ``settings`` and what was ``changed`` in
its result's ``extra``):

``darts`` — the paper's method with the official code's settings (quark0/darts,
``cnn/train_search.py``, ``architect.py``, ``model_search.py``): weights SGD, momentum 0.9,
lr 0.025 cosine-annealed per epoch to 0.001, weight decay 3e-4, gradient norm clipped at 5;
α Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3, initialised ``1e-3·N(0, 1)``; batch
64 on each half; 50 epochs (the caller scales ``epochs``/``batch_size`` to its budget); no
warm-up; candidate BatchNorms without affine parameters; **second order**: the code's
argparse default is first order (``--unrolled`` off), but its README's search command is
``train_search.py --unrolled`` and the paper's headline CIFAR-10 cell (2.76 % error) is the
second-order one, so that is the method the name stands for (``darts_first_order`` is the
other). On cell spaces of two-operand nodes (the ``darts`` space) each node has one α per
(incoming edge, op) — 14 edges × 8 ops per cell kind — and sums a mixed op on every edge
(``Supernet(edge_alphas=True)``); the derivation is the paper's: each node keeps its two
incoming edges whose strongest non-``none`` op weighs most, each with that op
(:meth:`~nasir.backends.torch.supernet.CellEdges.derive`). Per-edge spaces (NAS-Bench-201)
take the strongest non-``none`` op of each edge.

``darts_first_order`` — the same with ``order=1`` (the code's argparse default; the paper's
"DARTS (first order)" row).

``darts_pt`` — what ``darts`` ran before (issue 21): DARTS-PT's perturbation selection
(Wang et al., ICLR 2021, :func:`perturbation_select`: per edge, the op whose removal from
the trained supernet costs the most accuracy on ``pt_images`` of the architecture half)
instead of the argmax, on a search tuned to digits' tens of steps: first order, weights
Adam lr 3e-3 cosine per step to lr/50 with no weight decay, 2 of 8 epochs weights-only
warm-up, α Adam lr 0.05 (DARTS' ≈ 50 × 390 steps × 3e-4 of reachable logit distance over
digits' ≈ 54 steps), α initialised at 0, and on cell spaces input logits × op logits per
operand (``Supernet(per_input_ops=True)``) with the factored top-2 derivation of
:func:`discretize`. Measured on digits (notes/issue-9.md): the paper's argmax of a short
search stays near uniform and prefers parameter-free ops.

Weight steps run with the logits frozen (their gradients would be discarded), and the
supernet does not run ``none`` candidates, options pinned off by DARTS-PT, or the same
pool of one state twice (:class:`~nasir.backends.torch.supernet.Supernet`).

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> r = DartsSearch(sp, seed=0, epochs=2, data_fraction=0.1).search()
>>> sorted(r.assignment) == sorted(d.label for d in sp.decisions)
True
>>> r.extra["variant"], r.extra["settings"]["order"], r.extra["changed"]
('darts', 2, {'epochs': 2, 'data_fraction': 0.1})
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.supernet import Supernet
from nasir.decision_meta import positions
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.controller import single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    SearchData,
    SearchSettings,
    derive_from_probs,
    on_device,
    resolve_variant,
    search_data,
)
from nasir.strategies.oneshot.strategy import OneShotStrategy

__all__ = ["VARIANTS", "Darts", "DartsFirstOrder", "DartsPT", "DartsSearch", "DartsSettings",
           "arch_probs", "discretize", "input_pair", "perturbation_select", "slot_role"]

def slot_role(space: Space, label: str) -> str | None:
    """``"op"`` / ``"input"`` for an operand's op or input decision of a cell block (its
    metadata has a ``slot``), else ``None``.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("darts")
    >>> slot_role(sp, "normal_b0_op_a"), slot_role(sp, "normal_b0_in_b")
    ('op', 'input')
    """
    m = space.decision(label).meta
    return m.role if m.slot is not None and m.role in ("op", "input") else None


def input_pair(space: Space, label: str) -> str | None:
    """For the input decision of operand ``a`` of a cell block, the input decision of the
    same block's operand ``b`` (else ``None``).

    >>> from nasir.spaces import get_space
    >>> input_pair(get_space("darts"), "reduce_b3_in_a")
    'reduce_b3_in_b'
    """
    m = space.decision(label).meta
    if m.role != "input" or m.slot != "a":
        return None
    for k in positions(space.decisions, role="input", slot="b", cell=m.cell, block=m.block):
        return space.decisions[k].label
    return None


def arch_probs(net: Supernet) -> dict[str, np.ndarray]:
    """Softmax of each decision's logits, and of each per-edge cell node's logits over the
    ops of every edge (``edges × ops``, under the node's key)."""
    out = {lb: F.softmax(net.alphas[lb.replace(".", "__")].detach(), -1).cpu().numpy()
           for lb in net.decisions()}
    for k in net.cell_edges:
        out[k] = F.softmax(net.alphas[k.replace(".", "__")].detach(), -1).cpu().numpy()
    return out


def discretize(net: Supernet, none: str = "exclude") -> dict[str, Any]:
    """Derive a discrete assignment; ``none`` is the policy for ``none`` options of
    :func:`~nasir.strategies.oneshot.common.derive_from_probs` (DARTS: ``exclude``).

    Per-edge cell nodes (``edge_alphas``) take DARTS' rule
    (:meth:`~nasir.backends.torch.supernet.CellEdges.derive`). With factored logits (input
    logits × op logits, ``darts_pt``) each op decision takes its strongest non-``none`` op
    and each node the two strongest *distinct* inputs by the joint softmax mass.
    """
    opts = net.decisions()
    probs = arch_probs(net)
    cells: dict[str, Any] = {}
    for k, c in net.cell_edges.items():
        cells |= c.derive(probs[k])
    out = derive_from_probs(net.space, {lb: probs[lb] for lb in opts},
                            {**net.fixed, **cells}, none=none)
    for lb in opts:
        if slot_role(net.space, lb) == "op" and "none" in opts[lb] and len(opts[lb]) > 1:
            p = probs[lb].copy()
            p[list(opts[lb]).index("none")] = -1.0
            out[lb] = opts[lb][int(np.argmax(p))]
    for lb in opts:
        other = input_pair(net.space, lb)
        if other is None or other not in opts:
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


def perturbation_select(net: Supernet, batches: list[tuple[Any, Any]],
                        tune: Any = None, seed: int = 0, none: str = "exclude"
                        ) -> dict[str, Any]:
    """DARTS-PT selection (Wang et al., ICLR 2021): per decision (random order), drop each
    candidate from its mixed op in turn and keep the one whose removal costs the supernet
    the most accuracy on ``batches``; pin it (one-hot) and, with ``tune``, fine-tune the
    weights before the next decision. Input decisions of two-operand cells, and per-edge
    cell nodes, are left to :func:`discretize`. Returns ``{label: option}`` for the
    decisions it selected.

    The architecture logits are left pinned (``-inf`` off the chosen option).
    """
    opts = net.decisions()
    labels = [lb for lb in opts if slot_role(net.space, lb) != "input" and len(opts[lb]) > 1]
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


@dataclass(frozen=True)
class DartsSettings(SearchSettings):
    """Every setting of a DARTS search; the defaults are the paper's (``darts``).

    Attributes:
        epochs: passes over the weight half (``warmup`` included; paper 50).
        warmup: leading epochs that train the weights only (paper 0).
        order: 1 (first order) or 2 (second order, unrolled).
        batch_size: images a step, on each half (paper 64).
        data_fraction: fraction of the training split used (both halves).
        w_optimizer, w_lr, w_lr_min, w_momentum, w_weight_decay: the weight optimizer
            (``sgd`` or ``adam``), its lr cosine-annealed to ``w_lr_min``.
        lr_schedule: ``epoch`` (cosine stepped once an epoch, as the code) or ``step``.
        grad_clip: weight gradient norm clip.
        a_lr, a_betas, a_weight_decay: the architecture Adam.
        a_init_std: α initialised ``a_init_std · N(0, 1)`` (0: zeros).
        unroll_xi: second order's virtual step ``ξ``; ``None``: the current weight lr
            with SGD (the code), 0.05 with Adam.
        alphas: ``edge`` — one α per (edge, op) on two-operand cell spaces (DARTS);
            ``factored`` — input logits × op logits per operand.
        affine: BatchNorm affine parameters in the candidates (DARTS searches without).
        none: derivation policy for ``none`` options (``exclude``, ``connect``, ``keep``).
        select: ``argmax`` (DARTS' derivation) or ``pt`` (DARTS-PT's perturbations).
        pt_tune_steps: DARTS-PT weight steps after each decision.
        pt_images: images of the architecture half DARTS-PT scores each perturbation on
            (``None``: all; 24 supernet evaluations on NB201: 256 images ≈ 0.35× the cost
            of training a child, all 539 ≈ 0.8×).
    """

    epochs: int = 50
    warmup: int = 0
    order: int = 2
    batch_size: int = 64
    data_fraction: float = 1.0
    w_optimizer: str = "sgd"
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    lr_schedule: str = "epoch"
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    a_init_std: float = 1e-3
    unroll_xi: float | None = None
    alphas: str = "edge"
    affine: bool = False
    none: str = "exclude"
    select: str = "argmax"
    pt_tune_steps: int = 0
    pt_images: int | None = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "a_betas", tuple(float(b) for b in self.a_betas))
        checks = [
            (self.order in (1, 2), f"DARTS order must be 1 or 2, got {self.order!r}",
             "order=1 (first-order) or order=2 (unrolled)"),
            (self.epochs >= 1 and 0 <= self.warmup < self.epochs,
             f"need epochs >= 1 and 0 <= warmup < epochs, got {self.epochs}, "
             f"{self.warmup}", "e.g. epochs=8, warmup=2"),
            (self.none in ("exclude", "connect", "keep"), f"unknown none policy {self.none!r}",
             "use 'exclude', 'connect' or 'keep'"),
            (self.select in ("argmax", "pt"), f"unknown DARTS selection {self.select!r}",
             "use 'argmax' (DARTS) or 'pt' (DARTS-PT)"),
            (self.pt_images is None or self.pt_images >= 1,
             f"pt_images must be >= 1 (or None: all), got {self.pt_images}", ""),
            (self.w_optimizer in ("sgd", "adam"),
             f"unknown weight optimizer {self.w_optimizer!r}", "use 'adam' or 'sgd'"),
            (self.lr_schedule in ("epoch", "step"),
             f"unknown lr schedule {self.lr_schedule!r}", "'epoch' or 'step'"),
            (self.alphas in ("edge", "factored"), f"unknown alphas {self.alphas!r}",
             "'edge' (one α per edge and op, DARTS) or 'factored' (input × op)"),
            (self.batch_size >= 1 and 0 < self.data_fraction <= 1 and self.a_init_std >= 0,
             "need batch_size >= 1, 0 < data_fraction <= 1 and a_init_std >= 0", ""),
        ]
        for ok, msg, hint in checks:
            if not ok:
                raise SpecError(msg, where="DARTS settings", hint=hint or None)


#: registry name → settings (module docstring)
VARIANTS: dict[str, DartsSettings] = {
    "darts": DartsSettings(),
    "darts_first_order": DartsSettings(order=1),
    "darts_pt": DartsSettings(
        epochs=8, warmup=2, order=1, w_optimizer="adam", w_lr=3e-3, w_lr_min=3e-3 / 50,
        w_weight_decay=0.0, lr_schedule="step", a_lr=5e-2, a_init_std=0.0,
        alphas="factored", select="pt"),
}


class DartsSearch:
    """DARTS on a space's supernet.

    Args:
        space: the search space (decisions that change types must be pinned in ``fixed``).
        seed: seeds weights, α, data order and sampling.
        variant: ``darts`` (the paper's), ``darts_first_order`` or ``darts_pt``
            (:data:`VARIANTS`, module docstring).
        fixed: decisions pinned to one value.
        device: where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``).
        **options: single :class:`DartsSettings` fields overriding the variant's.
    """

    method: ClassVar[str] = "darts"

    def __init__(self, space: Space, seed: int = 0, *, variant: str = "darts",
                 fixed: Mapping[str, Any] | None = None, device: str = "cpu",
                 **options: Any) -> None:
        cfg = resolve_variant(VARIANTS, variant, options, "DARTS")
        assert isinstance(cfg, DartsSettings)
        #: the registry name of the variant and its settings with the options applied
        self.variant, self.settings = variant, cfg
        #: the settings the options changed from the variant's
        self.changed = cfg.changed_from(VARIANTS[variant])
        self.space, self.seed = space, int(seed)
        self.epochs, self.order = cfg.epochs, cfg.order
        self.fixed = dict(fixed or {})
        self.device = resolve_device(device)
        self.net: Supernet | None = None

    def _build(self) -> Supernet:
        cfg = self.settings
        torch.manual_seed(self.seed)
        net = Supernet(self.space, mode="darts", seed=self.seed, fixed=self.fixed,
                       affine=cfg.affine, per_input_ops=True,
                       edge_alphas=cfg.alphas == "edge").to(self.device)
        if cfg.a_init_std > 0:
            with torch.no_grad():
                for p in net.arch_parameters():
                    p.normal_(0.0, cfg.a_init_std)
        return net

    def _xi(self, wopt: torch.optim.Optimizer | None) -> float:
        """Second order's virtual step: the current weight lr with SGD (the code)."""
        cfg = self.settings
        if cfg.unroll_xi is not None:
            return float(cfg.unroll_xi)
        if cfg.w_optimizer != "sgd":
            return 0.05
        return float(wopt.param_groups[0]["lr"]) if wopt is not None else cfg.w_lr

    def _arch_grad_unrolled(self, net: Supernet, xw: Any, yw: Any, xa: Any, ya: Any,
                            wopt: torch.optim.Optimizer | None = None, replica: Any = None
                            ) -> list[torch.Tensor]:
        """The unrolled architecture gradient (module docstring). With a data-parallel
        ``replica`` (:mod:`~nasir.strategies.oneshot.data_parallel`) each loss is this rank's
        share of its global batch and each gradient the ranks' mean."""
        cfg = self.settings
        xi = self._xi(wopt)
        w, a = net.weight_parameters(), net.arch_parameters()

        def grad(x: Any, y: Any, wrt: list[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
            if replica is None:
                return torch.autograd.grad(F.cross_entropy(net(x), y), wrt, allow_unused=True)
            xs, ys = replica.shard(x, y)
            loss = replica.mean_loss(F.cross_entropy(net(xs), ys, reduction="sum"), len(y))
            return tuple(replica.average(torch.autograd.grad(loss, wrt, allow_unused=True),
                                         like=wrt))

        backup = [p.detach().clone() for p in w]
        gw = grad(xw, yw, w)
        state = wopt.state if cfg.w_optimizer == "sgd" and wopt is not None else {}
        with torch.no_grad():
            for p, g in zip(w, gw):
                if g is not None:
                    buf = state.get(p, {}).get("momentum_buffer")
                    moment = cfg.w_momentum * buf if buf is not None else 0.0
                    p.sub_(xi * (moment + g + cfg.w_weight_decay * p))
        grads = grad(xa, ya, a + w)
        ga, dw = grads[:len(a)], grads[len(a):]
        with torch.no_grad():
            for p, b in zip(w, backup):
                p.copy_(b)
        norm = torch.sqrt(sum((g * g).sum() for g in dw if g is not None))  # type: ignore[misc, arg-type]
        eps = 0.01 / (float(norm) + 1e-12)

        def shifted(sign: float) -> tuple[torch.Tensor | None, ...]:
            with torch.no_grad():
                for p, g, b in zip(w, dw, backup):
                    if g is not None:
                        p.copy_(b + sign * eps * g)
            return grad(xw, yw, a)

        gp, gm = shifted(1.0), shifted(-1.0)
        with torch.no_grad():
            for p, b in zip(w, backup):
                p.copy_(b)
        out = []
        for g0, p1, m1, p in zip(ga, gp, gm, a):
            g = torch.zeros_like(p) if g0 is None else g0
            if p1 is not None and m1 is not None:
                g = g - xi * (p1 - m1) / (2 * eps)
            out.append(g)
        return out

    def data_for(self, splits: Any = None) -> SearchData:
        """The search's loaders: ``splits`` (the run's data; digits when ``None``) cut in
        the weight and architecture halves, batched on the search's device."""
        cfg = self.settings
        return search_data(cfg.batch_size, self.seed, cfg.data_fraction, self.device, splits)

    def make_job(self, data: SearchData | None = None) -> Any:
        """The search as a resumable :class:`~nasir.strategies.oneshot.darts_job.DartsJob`
        (one epoch a step) on ``data`` (default: :meth:`data_for` digits)."""
        from nasir.strategies.oneshot.darts_job import DartsJob

        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else self.data_for()
            return DartsJob(self, data)

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Run the bilevel optimisation and derive; see the module docstring."""
        t0 = time.perf_counter()
        job = self.make_job(data)
        while not job.done:
            job.step()
        out: OneShotResult = job.outcome()
        out.wall_s = time.perf_counter() - t0
        return out


class Darts(OneShotStrategy):
    """Registry entry ``darts``: the paper's DARTS (second order, per-edge α, argmax
    derivation; :class:`DartsSearch`) — a search job of the run, then the derived child
    (and ``top_k - 1`` more) as trials (:mod:`~nasir.strategies.oneshot.strategy`; other
    options go to :class:`DartsSettings`)."""

    name: ClassVar[str] = "darts"
    variant: ClassVar[str | None] = "darts"
    search_cls = DartsSearch


class DartsFirstOrder(Darts):
    """Registry entry ``darts_first_order``: the paper's DARTS with ``order=1``."""

    name: ClassVar[str] = "darts_first_order"
    variant: ClassVar[str | None] = "darts_first_order"


class DartsPT(Darts):
    """Registry entry ``darts_pt``: DARTS-PT's perturbation selection on the digits-tuned
    search that ``darts`` ran before issue 21 (module docstring)."""

    name: ClassVar[str] = "darts_pt"
    variant: ClassVar[str | None] = "darts_pt"
