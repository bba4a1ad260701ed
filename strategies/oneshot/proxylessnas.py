"""ProxylessNAS (Cai et al., ICLR 2019): binarized paths with a latency-aware loss.

The supernet runs in ``binarized`` mode: a step trains only the sampled path's weights
(a single child's memory for them). Paths are sampled as in the paper's two-path
estimator (``paths=2``, the paper's text and the official code's ``two`` binary mode; its
ImageNet search script defaults to ``full_v2``, every gate's gradient): per decision two
options are sampled from the softmax, the active one from the softmax of their two
logits. The logits keep ``requires_grad`` in weight steps too, so those also run the
inactive option without grad and compute gate gradients that the next architecture step
discards (wasted work, left as measured). In architecture steps the pair's logits get
``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j(δ_ij − p_i)`` from the binary gates' gradients
``∂L/∂g_j = ⟨∂L/∂out, o_j⟩``; after each step the two updated logits are shifted so that
their log-sum-exp is unchanged (the options not sampled keep their probabilities).
``paths=1`` is the cruder single-gate estimator (no comparison between options).

The architecture loss is the official code's default (mit-han-lab/proxylessnas,
``search/nas_manager.py`` ``add_regularization_loss``, ``grad_reg_loss_type='mul#log'``,
α = 0.2, β = 0.3 in ``search/imagenet_arch_search.py``):

    α · CE · (log E[LAT] / log T)^β

with ``E[LAT]`` the softmax-expected latency from the TVM per-layer LUT (µs, optionally
calibrated against measured whole networks: ``calibrate=k``) and ``T`` the target (µs;
the code's ``ref_value``). The paper's text writes the additive
``CE + λ₁‖w‖² + λ₂ E[LAT]`` (the code's ``add#linear``: ``CE + λ (E[LAT] − T)/T``, λ = 0.1);
the code's default is the multiplicative form used here. ``T`` only rescales that term
(under Adam a rescaled loss takes nearly the same step), so nothing keeps a child under
``T``.

**Variants** (registry names; :class:`ProxylessSettings`; every run records ``variant``,
all ``settings`` and what was ``changed`` in its result's ``extra``):

``proxylessnas`` — the loss above (``constraint=0``).

``proxylessnas_penalty`` — the loss times MnasNet's hard-constraint factor
``max(1, E[LAT]/T)^4`` (``constraint=4``): 1 under ``T``, steep above it, so ``T`` binds;
neither paper has it (it was ``proxylessnas``' default before issue 21).

Not the paper's in both (digits' budgets): weights Adam lr 3e-3 (the code: SGD Nesterov
0.025 cosine, 40 warm-up + 120 epochs), logits Adam lr 0.05 betas (0.5, 0.999) every step
(the code: lr 1e-3, betas (0, 0.999), every 5th step). Derivation is connectivity-aware
as in :mod:`~nasir.strategies.oneshot.fbnet`. Runs on the per-layer MBConv spaces
(``proxylessnas``; ``tiny_proxyless``, its digits-sized version, needs nothing pinned),
whose ``zero`` ops skip a residual layer; widths that change types must be pinned in
``fixed``. On NAS-Bench-201's cell the gate gradient favours ``skip_connect`` (a longer
search collapses to all-skip cells, DARTS' failure; notes/issue-9.md).

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
>>> r = ProxylessSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.1,
...                     latency_rows=rows, target_us=100.0).search()
>>> r.method, r.extra["variant"], r.extra["settings"]["constraint"]
('proxylessnas', 'proxylessnas', 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.strategies.oneshot.fbnet import LatencySearch, LatencySettings
from nasir.strategies.oneshot.strategy import OneShotStrategy

__all__ = ["Proxyless", "ProxylessPenalty", "ProxylessSearch", "ProxylessSettings"]


@dataclass(frozen=True)
class ProxylessSettings(LatencySettings):
    """ProxylessNAS' settings: the target ``T`` (``target_us``, µs), the loss weights
    ``alpha``/``beta``, ``paths`` (2: the two-path binary-gate gradient) and
    ``constraint`` (γ of ``max(1, E[LAT]/T)^γ``; 0 in the paper's loss)."""

    target_us: float | None = 1000.0
    alpha: float = 0.2
    beta: float = 0.3
    paths: int = 2
    constraint: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_us is None or not self.target_us > 1.0:
            raise SpecError(f"target_us must be > 1 µs, got {self.target_us}",
                            hint="ProxylessNAS' latency target T in microseconds")
        if self.paths not in (1, 2):
            raise SpecError(f"paths must be 1 or 2, got {self.paths}",
                            hint="2: the paper's two-path binary-gate gradient")
        if self.latency != "expected":
            raise SpecError("latency='sampled' needs a Gumbel search, not binarized",
                            hint="ProxylessNAS uses the expected latency")


class ProxylessSearch(LatencySearch):
    """ProxylessNAS search; ``variant``: ``proxylessnas`` (the code's loss) or
    ``proxylessnas_penalty`` (times ``max(1, E/T)^4``); options override
    :class:`ProxylessSettings` fields (``target_us``: the latency target T, µs)."""

    method: ClassVar[str] = "proxylessnas"
    variants: ClassVar[Mapping[str, LatencySettings]] = {
        "proxylessnas": ProxylessSettings(),
        "proxylessnas_penalty": ProxylessSettings(constraint=4.0),
    }
    freeze_in_weight_steps: ClassVar[bool] = False  # as measured (module docstring)

    def mode_of(self, cfg: LatencySettings) -> str:
        """Binarized paths."""
        return "binarized"

    @property
    def cfg(self) -> ProxylessSettings:
        """The settings, typed."""
        assert isinstance(self.settings, ProxylessSettings)
        return self.settings

    def supernet_options(self) -> dict[str, Any]:
        """The paper's two-path binary-gate gradient (``binary_paths``)."""
        return {"binary_paths": self.cfg.paths}

    @torch.no_grad()
    def after_arch_step(self, net: Supernet, before: Mapping[str, torch.Tensor]) -> None:
        """The paper's rescaling (two paths): shift the two updated logits of each pair so
        that their log-sum-exp is what it was before the step, which keeps the
        probabilities of the options that were not sampled unchanged."""
        for lb, (ia, ib) in net.last_pairs.items():
            k = lb.replace(".", "__")
            new, old = net.alphas[k], before[k]
            idx = torch.tensor([ia, ib], device=new.device)
            new[idx] -= torch.logsumexp(new[idx], 0) - torch.logsumexp(old[idx], 0)

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``α · CE · (log E[LAT] / log T)^β`` (``proxylessnas_penalty``: the search
        multiplies it by ``max(1, E[LAT]/T)^4``, :meth:`over_target`)."""
        t = float(self.cfg.target_us or 0.0)
        ratio = torch.log(lat) / torch.log(torch.tensor(t))
        return self.cfg.alpha * ce * ratio ** self.cfg.beta


class Proxyless(OneShotStrategy):
    """Registry entry ``proxylessnas``: the official code's latency loss, no penalty;
    a search job of the run (:class:`ProxylessSearch`), then the derived children as trials
    (:mod:`~nasir.strategies.oneshot.strategy`)."""

    name: ClassVar[str] = "proxylessnas"
    variant: ClassVar[str | None] = "proxylessnas"
    search_cls = ProxylessSearch


class ProxylessPenalty(Proxyless):
    """Registry entry ``proxylessnas_penalty``: the same loss times
    ``max(1, E[LAT]/T)^4`` (``constraint=4``)."""

    name: ClassVar[str] = "proxylessnas_penalty"
    variant: ClassVar[str | None] = "proxylessnas_penalty"
