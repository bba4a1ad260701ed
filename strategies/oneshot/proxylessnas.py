"""ProxylessNAS (Cai et al., ICLR 2019): binarized paths with a latency target.

The supernet runs in ``binarized`` mode: each forward samples one path from the softmax of
the logits and runs only it (a single child's memory); the logits get the paper's
gradient through the supernet's straight-through gate (``∂L/∂α`` from ``∂L/∂g`` of the
sampled path's gate, one sampled path per step rather than the paper's two). The
architecture loss is the official code's default

    α · CE · (log E[LAT] / log T)^β · max(1, E[LAT]/T)^γ      (α = 0.2, β = 0.3)

with ``E[LAT]`` the softmax-expected latency from the TVM per-layer LUT (µs, optionally
calibrated against measured whole networks: ``calibrate=k``) and ``T`` the target (µs).
The official term alone only rescales with ``T`` (under Adam the step does not change),
so the MnasNet hard-constraint factor (``γ = constraint``, 1 below ``T``) makes ``T``
bind: above it the latency gradient is steep. Derivation is connectivity-aware as in
:mod:`~nasir.strategies.oneshot.fbnet`. Runs on the per-layer MBConv space
(``proxylessnas``, with its ``zero`` ops); widths that change types must be pinned in
``fixed``.

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

from typing import Any, ClassVar

import torch

from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.oneshot.common import OneShotStrategy
from nasir.strategies.oneshot.fbnet import LatencySearch

__all__ = ["Proxyless", "ProxylessSearch"]


class ProxylessSearch(LatencySearch):
    """ProxylessNAS search; ``target_us`` is the latency target T (µs)."""

    method: ClassVar[str] = "proxylessnas"
    mode: ClassVar[str] = "binarized"

    def __init__(self, space: Space, seed: int = 0, *, target_us: float = 1000.0,
                 alpha: float = 0.2, beta: float = 0.3, **kw: Any) -> None:
        if not target_us > 1.0:
            raise SpecError(f"target_us must be > 1 µs, got {target_us}")
        super().__init__(space, seed, target_us=target_us, **kw)
        self.alpha, self.beta = alpha, beta

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``α · CE · (log E[LAT] / log T)^β · max(1, E[LAT]/T)^γ``."""
        assert self.target_us is not None
        ratio = torch.log(lat) / torch.log(torch.tensor(self.target_us))
        return self.alpha * ce * ratio ** self.beta * self.over_target(lat)


class Proxyless(OneShotStrategy):
    """Registry entry ``proxylessnas``: ``propose`` runs :class:`ProxylessSearch` once."""

    name: ClassVar[str] = "proxylessnas"
    search_cls = ProxylessSearch
