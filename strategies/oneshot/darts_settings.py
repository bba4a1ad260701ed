"""DARTS' settings and its variants table (:mod:`~nasir.strategies.oneshot.darts`)."""

from __future__ import annotations

from dataclasses import dataclass

from nasir.errors import SpecError
from nasir.strategies.oneshot.common import SearchSettings

__all__ = ["VARIANTS", "DartsSettings"]


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
