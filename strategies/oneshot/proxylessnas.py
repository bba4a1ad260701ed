"""ProxylessNAS (Cai et al., ICLR 2019): binarized paths with a latency target.

The supernet runs in ``binarized`` mode: a step trains only the sampled path's weights
(a single child's memory for them). Paths are sampled as in the paper's two-path
estimator (``paths=2``, the official code's ``two`` mode): per decision two options are
sampled from the softmax, the active one from the softmax of their two logits. The logits
keep ``requires_grad`` in weight steps too, so those also run the inactive option without
grad and compute gate gradients that the next architecture step discards (wasted work,
left as measured). In architecture steps the pair's logits get
``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j(δ_ij − p_i)`` from the binary gates' gradients
``∂L/∂g_j = ⟨∂L/∂out, o_j⟩``; after each step the two updated logits are shifted so that
their log-sum-exp is unchanged (the options not sampled keep their probabilities).
``paths=1`` is the cruder single-gate estimator (no comparison between options). The
architecture loss is the official code's default

    α · CE · (log E[LAT] / log T)^β · max(1, E[LAT]/T)^γ      (α = 0.2, β = 0.3)

with ``E[LAT]`` the softmax-expected latency from the TVM per-layer LUT (µs, optionally
calibrated against measured whole networks: ``calibrate=k``) and ``T`` the target (µs).
The official term alone only rescales with ``T`` (under Adam the step does not change),
so the MnasNet hard-constraint factor (``γ = constraint``, 1 below ``T``) makes ``T``
bind: above it the latency gradient is steep. Derivation is connectivity-aware as in
:mod:`~nasir.strategies.oneshot.fbnet`. Runs on the per-layer MBConv spaces
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
>>> r.method
'proxylessnas'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.oneshot.common import OneShotStrategy
from nasir.strategies.oneshot.fbnet import LatencySearch

__all__ = ["Proxyless", "ProxylessSearch"]


class ProxylessSearch(LatencySearch):
    """ProxylessNAS search; ``target_us`` is the latency target T (µs)."""

    method: ClassVar[str] = "proxylessnas"
    mode: ClassVar[str] = "binarized"
    freeze_in_weight_steps: ClassVar[bool] = False  # as measured (module docstring)

    def __init__(self, space: Space, seed: int = 0, *, target_us: float = 1000.0,
                 alpha: float = 0.2, beta: float = 0.3, paths: int = 2, **kw: Any) -> None:
        if not target_us > 1.0:
            raise SpecError(f"target_us must be > 1 µs, got {target_us}")
        if paths not in (1, 2):
            raise SpecError(f"paths must be 1 or 2, got {paths}",
                            hint="2: the paper's two-path binary-gate gradient")
        self.paths = int(paths)
        super().__init__(space, seed, target_us=target_us, **kw)
        self.alpha, self.beta = alpha, beta

    def supernet_options(self) -> dict[str, Any]:
        """The paper's two-path binary-gate gradient (``binary_paths``)."""
        return {"binary_paths": self.paths}

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
        """``α · CE · (log E[LAT] / log T)^β`` (the search multiplies it by
        ``max(1, E[LAT]/T)^γ``, :meth:`over_target`)."""
        assert self.target_us is not None
        ratio = torch.log(lat) / torch.log(torch.tensor(self.target_us))
        return self.alpha * ce * ratio ** self.beta


class Proxyless(OneShotStrategy):
    """Registry entry ``proxylessnas``: ``propose`` runs :class:`ProxylessSearch` once."""

    name: ClassVar[str] = "proxylessnas"
    search_cls = ProxylessSearch
