"""ENAS' settings, its variants table, the variant a space takes and the SGDR learning-rate
schedule (:mod:`~nasir.strategies.oneshot.enas`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.controller import ANCHOR_KEYS, INPUT_SAMPLINGS, SubsetInput
from nasir.strategies.oneshot.common import SearchSettings

__all__ = ["ENAS_ADAM", "ENAS_MACRO", "ENAS_MICRO", "VARIANTS", "EnasSettings", "sgdr_lr",
           "space_variant"]


@dataclass(frozen=True)
class EnasSettings(SearchSettings):
    """Every setting of an ENAS search; the defaults are the official macro search's
    (``enas_macro``). Sources: melodyguan/enas ``scripts/cifar10_macro_search.sh`` (S),
    ``src/cifar10/main.py`` (M), ``src/utils.py`` (U), ``src/cifar10/general_controller.py``
    (G).

    Attributes:
        epochs: alternations (S:12 ``--num_epochs=310``; micro 150).
        batch_size: images a weight step and a reward batch (S:11 128; micro 160).
        data_fraction: fraction of the training split used (both halves).
        w_optimizer, w_nesterov, w_momentum: ``sgd`` (M:137 ``momentum``: U:213-214
            ``MomentumOptimizer(lr, 0.9, use_nesterov=True)``) or ``adam``.
        w_lr, w_lr_min: the weight lr's maximum and minimum (S:24-25 0.05, 0.0005).
        lr_schedule: ``sgdr`` — cosine with warm restarts set once an epoch, cycles of
            ``lr_t0`` epochs growing ``lr_t_mul``-fold (S:23,26-27; U:154-183); ``cosine``
            — one cosine per step over the whole search (``enas_adam``).
        w_weight_decay: torch's coefficient (``grad += wd·w``); the code's ``l2_reg``
            adds ``l2·Σw²`` to the loss (U:118-123), so ``wd = 2·l2`` (S:18 2.5e-4 → 5e-4;
            micro 1e-4 → 2e-4).
        grad_clip: weight gradient norm clip; ``None`` (the code asks for 5.0 per tensor,
            M:54,127, but U:149 appends the unclipped gradient).
        controller_steps: controller updates an epoch (S:34 50; micro 30; every epoch,
            S:31).
        controller_samples: children a controller update averages (S:33 20, the
            ``SyncReplicasOptimizer`` aggregate, U:227-231, run ``steps × samples`` times,
            M:279-280; micro 10).
        c_lr, c_betas, c_eps: the controller Adam (S:35 0.001, never decayed M:161;
            U:218 ``beta1=0.0, epsilon=1e-3``; micro lr 0.0035).
        hidden: controller LSTM width (M:153 64; one layer, M:154).
        entropy, entropy_in: entropy weight (S:30 1e-4) and where it enters: ``reward``
            (G:279-280) or ``loss`` (``enas_adam``).
        baseline_decay, baseline_init: moving-average baseline (M:72 0.99) and its start
            (G:283 0.0; ``None``: the first reward).
        tanh_constant, op_tanh_reduce, temperature: logit shaping (S:36 1.5; micro 1.10
            with op logits at ``1.10 / 2.5``, ``micro_controller.py:181-183``; the macro
            controller takes no ``op_tanh_reduce``, so 1.0; temperature M:75 ``None``).
        input_sampling, anchor_keys, skip_target, skip_weight, skip_logit_scale: the
            skip decisions (:data:`~nasir.strategies.controller.ENAS_INPUTS`; S:38-39
            target 0.4, weight 0.8; micro: weight 0).
        derive_samples, derive_greedy, derive_batches: derivation — ``derive_samples``
            children (M:309 10), the first the greedy one when ``derive_greedy``, each
            scored on ``derive_batches`` batches (the paper: one; ``None``: the whole
            architecture half).
    """

    epochs: int = 310
    batch_size: int = 128
    data_fraction: float = 1.0
    w_optimizer: str = "sgd"
    w_nesterov: bool = True
    w_momentum: float = 0.9
    w_lr: float = 0.05
    w_lr_min: float = 0.0005
    lr_schedule: str = "sgdr"
    lr_t0: int = 10
    lr_t_mul: int = 2
    w_weight_decay: float = 5e-4
    grad_clip: float | None = None
    controller_steps: int = 50
    controller_samples: int = 20
    c_lr: float = 1e-3
    c_betas: tuple[float, float] = (0.0, 0.999)
    c_eps: float = 1e-3
    hidden: int = 64
    entropy: float = 1e-4
    entropy_in: str = "reward"
    baseline_decay: float = 0.99
    baseline_init: float | None = 0.0
    tanh_constant: float | None = 1.5
    op_tanh_reduce: float = 1.0
    temperature: float | None = None
    input_sampling: str = "anchor_attention"
    anchor_keys: str = "next"
    skip_target: float = 0.4
    skip_weight: float = 0.8
    skip_logit_scale: float = 2.0
    derive_samples: int = 10
    derive_greedy: bool = False
    derive_batches: int | None = 1

    def __post_init__(self) -> None:
        if isinstance(self.c_betas, list):  # JSON gives lists
            object.__setattr__(self, "c_betas", tuple(self.c_betas))
        checks = [
            (self.epochs >= 1 and self.controller_steps >= 0 and self.derive_samples >= 1
             and self.controller_samples >= 1,
             "ENAS needs epochs >= 1, controller_steps >= 0, controller_samples >= 1 and "
             "derive_samples >= 1", ""),
            (self.batch_size >= 1 and 0 < self.data_fraction <= 1,
             "need batch_size >= 1 and 0 < data_fraction <= 1", ""),
            (self.w_optimizer in ("sgd", "adam"),
             f"unknown weight optimizer {self.w_optimizer!r}", "use 'sgd' or 'adam'"),
            (not (self.w_nesterov and self.w_optimizer == "sgd" and self.w_momentum <= 0),
             "Nesterov momentum needs w_momentum > 0", "or w_nesterov=False"),
            (self.lr_schedule in ("sgdr", "cosine"),
             f"unknown lr schedule {self.lr_schedule!r}",
             "'sgdr' (per epoch, warm restarts) or 'cosine' (per step)"),
            (self.lr_t0 >= 1 and self.lr_t_mul >= 1, "need lr_t0 >= 1 and lr_t_mul >= 1", ""),
            (self.entropy_in in ("reward", "loss"), f"unknown entropy_in {self.entropy_in!r}",
             "'reward' (ENAS) or 'loss'"),
            (0 <= self.baseline_decay < 1,
             f"baseline_decay must lie in [0, 1), got {self.baseline_decay}", ""),
            (self.input_sampling in INPUT_SAMPLINGS,
             f"unknown input_sampling {self.input_sampling!r}",
             f"use one of {', '.join(INPUT_SAMPLINGS)}"),
            (self.anchor_keys in ANCHOR_KEYS, f"unknown anchor_keys {self.anchor_keys!r}",
             f"use one of {', '.join(ANCHOR_KEYS)}"),
            (0 < self.skip_target < 1 and self.skip_weight >= 0 and self.op_tanh_reduce > 0,
             "need 0 < skip_target < 1, skip_weight >= 0 and op_tanh_reduce > 0", ""),
            (self.derive_batches is None or self.derive_batches >= 1,
             f"derive_batches must be >= 1 (or None: all), got {self.derive_batches}", ""),
        ]
        for ok, msg, hint in checks:
            if not ok:
                raise SpecError(msg, where="ENAS settings", hint=hint or None)


#: the official macro search (module docstring; sources at :class:`EnasSettings`)
ENAS_MACRO = EnasSettings()
#: the official micro search (``scripts/cifar10_micro_search.sh``: lines 11, 12, 18, 33-37)
ENAS_MICRO = dataclasses.replace(
    ENAS_MACRO, epochs=150, batch_size=160, w_weight_decay=2e-4, controller_steps=30,
    controller_samples=10, c_lr=3.5e-3, tanh_constant=1.10, op_tanh_reduce=2.5,
    skip_weight=0.0)
#: what ``enas`` ran before issue 21 (module docstring)
ENAS_ADAM = dataclasses.replace(
    ENAS_MACRO, epochs=150, batch_size=64, w_optimizer="adam", w_nesterov=False, w_lr=3e-3,
    w_lr_min=3e-3 / 50, lr_schedule="cosine", w_weight_decay=0.0, grad_clip=5.0,
    controller_steps=20, controller_samples=1, c_lr=3.5e-3, c_betas=(0.9, 0.999),
    c_eps=1e-8, entropy=1e-3, entropy_in="loss", baseline_decay=0.95, baseline_init=None,
    derive_greedy=True, derive_batches=None)

#: variant name → settings (module docstring)
VARIANTS: dict[str, EnasSettings] = {"enas_macro": ENAS_MACRO, "enas_micro": ENAS_MICRO,
                                     "enas_adam": ENAS_ADAM}


def space_variant(space: Space) -> str:
    """The official settings a space takes (``enas_macro`` or ``enas_micro``): its own for
    the two ENAS spaces, else macro when a decision is a skip subset (an anchor point of
    the macro controller), else micro.

    >>> from nasir.spaces import get_space
    >>> space_variant(get_space("enas_macro", input_shape=(1, 8, 8), layers=3))
    'enas_macro'
    >>> space_variant(get_space("nb201", input_shape=(1, 8, 8), channels=4))
    'enas_micro'
    """
    if space.name in ("enas_macro", "enas_micro"):
        return space.name
    skips = any(d.kind == "input" and SubsetInput.of(d.options) is not None
                for d in space.decisions)
    return "enas_macro" if skips else "enas_micro"


def sgdr_lr(epoch: int, lr_max: float, lr_min: float, t0: int, t_mul: int) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter), by epoch as ENAS's
    ``utils.get_train_ops``: cycles of ``t0``, ``t0·t_mul``, … epochs, each from
    ``lr_max`` down towards ``lr_min``.

    >>> [round(sgdr_lr(e, 0.05, 0.0005, 10, 2), 4) for e in (0, 5, 9, 10, 30)]
    [0.05, 0.0253, 0.0017, 0.05, 0.05]
    """
    start, length = 0, t0
    while epoch - start >= length:
        start, length = start + length, length * t_mul
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * (epoch - start) / length))
