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

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.supernet import Supernet
from nasir.space import Space
from nasir.strategies.controller import single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    SearchData,
    on_device,
    resolve_variant,
    search_data,
)
from nasir.strategies.oneshot.darts_job import DartsJob
from nasir.strategies.oneshot.darts_select import (
    arch_probs,
    discretize,
    input_pair,
    perturbation_select,
    slot_role,
)
from nasir.strategies.oneshot.darts_settings import VARIANTS, DartsSettings
from nasir.strategies.oneshot.strategy import OneShotStrategy
from nasir.strategies.oneshot.supernet_job import run_job_search

__all__ = ["VARIANTS", "Darts", "DartsFirstOrder", "DartsPT", "DartsSearch", "DartsSettings",
           "arch_probs", "discretize", "input_pair", "perturbation_select", "slot_role"]


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
        norm = torch.sqrt(sum((g * g).sum() for g in dw if g is not None))  # type: ignore[arg-type]
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

    def select_pt(self, net: Supernet, batches: list[tuple[Any, Any]], tune: Any = None
                  ) -> dict[str, Any]:
        """DARTS-PT's selection after the search (:func:`perturbation_select` with the
        search's seed and ``none`` setting); the job calls it."""
        return perturbation_select(net, batches, tune, self.seed, self.settings.none)

    def data_for(self, splits: Any = None) -> SearchData:
        """The search's loaders: ``splits`` (the run's data; digits when ``None``) cut in
        the weight and architecture halves, batched on the search's device."""
        cfg = self.settings
        return search_data(cfg.batch_size, self.seed, cfg.data_fraction, self.device, splits)

    def make_job(self, data: SearchData | None = None) -> DartsJob:
        """The search as a resumable :class:`~nasir.strategies.oneshot.darts_job.DartsJob`
        (one epoch a step) on ``data`` (default: :meth:`data_for` digits)."""
        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else self.data_for()
            return DartsJob(self, data)

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Run the bilevel optimisation and derive; see the module docstring."""
        result: OneShotResult = run_job_search(self.make_job, data)
        return result


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
