"""FBNet (Wu et al., CVPR 2019): Gumbel-softmax search with a latency-aware loss.

The supernet runs in ``gumbel`` mode: every layer's candidates are mixed by a
Gumbel-softmax sample of its logits at temperature ``τ``, annealed per epoch
``τ ← τ0 · decay^epoch`` (paper: τ0 = 5, decay 0.956). The loss is

    CE(w, α) · α_l · log(LAT(α))^β        (α_l = 0.2, β = 0.6 as in the paper)

with ``LAT`` the expected latency: per decision, the softmax of its logits dotted with the
latency each option adds, measured with TVM on the host through the per-layer LUT
(:func:`~nasir.strategies.oneshot.common.decision_latency`). Latency is in µs so its log is
positive at digits' sub-millisecond scale. As in FBNet, weights train on the first half
of the training split for ``warmup`` epochs first, then weights and logits alternate.
The derived network takes the argmax per decision.

``latency_rows`` may be given directly (label → per-option µs) instead of a LUT.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
>>> r = FBNetSearch(sp, seed=0, epochs=1, warmup=0, data_fraction=0.1,
...                 latency_rows=rows).search()
>>> r.extra["expected_latency_us"] > 0
True
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.controller import single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    OneShotStrategy,
    SearchData,
    cycle,
    decision_latency,
    search_data,
    weight_optimizer,
)

__all__ = ["FBNet", "FBNetSearch", "LatencySearch"]


class LatencySearch:
    """Shared machinery of the latency-aware searches (FBNet, ProxylessNAS)."""

    method: ClassVar[str] = "latency"
    mode: ClassVar[str] = "gumbel"

    def __init__(self, space: Space, seed: int = 0, *, epochs: int = 5, warmup: int = 1,
                 w_lr: float = 3e-3, a_lr: float = 1e-2, batch_size: int = 64,
                 data_fraction: float = 1.0, fixed: Mapping[str, Any] | None = None,
                 lut: Any = None, lut_path: str | None = None,
                 latency_rows: Mapping[str, Any] | None = None) -> None:
        if epochs < 1 or warmup < 0:
            raise SpecError(f"need epochs >= 1 and warmup >= 0, got {epochs}, {warmup}")
        self.space, self.seed, self.epochs, self.warmup = space, int(seed), epochs, warmup
        self.w_lr, self.a_lr = w_lr, a_lr
        self.batch_size, self.data_fraction = batch_size, data_fraction
        self.fixed = dict(fixed or {})
        self.lut, self.lut_path = lut, lut_path
        self.latency_rows = dict(latency_rows) if latency_rows is not None else None
        self.net: Supernet | None = None

    def rows(self) -> dict[str, np.ndarray]:
        """Per-option latency (µs) of each free decision (from the LUT unless given)."""
        if self.latency_rows is None:
            lut = self.lut
            if lut is None:
                from nasir.backends.tvm.lut import LatencyLUT
                from nasir.backends.tvm.measure import MeasureConfig

                lut = LatencyLUT(self.lut_path or "runs/oneshot_lut.db", "host",
                                 config=MeasureConfig(repeats=5, min_repeat_ms=2))
            ms = decision_latency(self.space, lut, self.fixed)
            self.latency_rows = {k: v * 1000.0 for k, v in ms.items()}
        out = {}
        for k, v in self.latency_rows.items():
            v = np.asarray(v, dtype=np.float64)
            finite = v[np.isfinite(v)]
            out[k] = np.where(np.isfinite(v), v, 10 * (finite.max() if finite.size else 1))
        return out

    def _lat_fn(self, net: Supernet) -> Any:
        rows = self.rows()
        keys = {lb: lb.replace(".", "__") for lb in net.decisions()}
        tabs = {lb: torch.tensor(rows[lb], dtype=torch.float32) for lb in keys if lb in rows}

        def expected() -> torch.Tensor:
            lat = torch.zeros(())
            for lb, t in tabs.items():
                lat = lat + (F.softmax(net.alphas[keys[lb]], -1) * t).sum()
            return lat.clamp_min(1.0 + 1e-6)

        return expected

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """The latency-aware architecture loss."""
        raise NotImplementedError

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        """Per-epoch hook (temperature annealing)."""

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Warm up weights, then alternate weight and architecture steps; derive argmax."""
        t0 = time.perf_counter()
        with single_thread():
            torch.manual_seed(self.seed)
            data = data or search_data(self.batch_size, self.seed, self.data_fraction)
            net = self.net = Supernet(self.space, mode=self.mode, seed=self.seed,
                                      fixed=self.fixed)
            expected = self._lat_fn(net)
            wopt = weight_optimizer(net, "adam", self.w_lr, 0.9, 0.0)
            aopt = torch.optim.Adam(net.arch_parameters(), lr=self.a_lr, betas=(0.5, 0.999))
            arch_it = cycle(data.train_a)
            history: list[dict[str, Any]] = []
            for ep in range(self.epochs):
                self._set_tau(net, ep)
                losses = []
                for x, y in data.train_w:
                    if ep >= self.warmup:
                        xa, ya = next(arch_it)
                        aopt.zero_grad()
                        loss_a = self.arch_loss(F.cross_entropy(net(xa), ya), expected())
                        loss_a.backward()
                        aopt.step()
                    wopt.zero_grad()
                    loss = F.cross_entropy(net(x), y)
                    loss.backward()
                    wopt.step()
                    losses.append(loss.item())
                history.append({"epoch": ep, "loss": float(np.mean(losses)),
                                "expected_latency_us": float(expected().detach())})
            a = self.space.check(net.derive())
            lat = float(expected().detach())
        return OneShotResult(self.method, a, time.perf_counter() - t0, self.epochs, history,
                             {"expected_latency_us": lat,
                              "predicted_latency_us": self.predict(a)})

    def predict(self, a: Mapping[str, Any]) -> float:
        """Additive-table latency (µs) of an assignment."""
        rows = self.rows()
        return float(sum(rows[d.label][d.index(a[d.label])] for d in self.space.decisions
                         if d.label in rows and d.label in a))


class FBNetSearch(LatencySearch):
    """FBNet search (see the module docstring); ``alpha``/``beta`` weight the latency."""

    method: ClassVar[str] = "fbnet"
    mode: ClassVar[str] = "gumbel"

    def __init__(self, space: Space, seed: int = 0, *, alpha: float = 0.2, beta: float = 0.6,
                 tau0: float = 5.0, tau_decay: float = 0.956, **kw: Any) -> None:
        super().__init__(space, seed, **kw)
        self.alpha, self.beta, self.tau0, self.tau_decay = alpha, beta, tau0, tau_decay

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        net.set_mode("gumbel", tau=self.tau0 * self.tau_decay ** epoch)

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``CE · α · log(LAT)^β``."""
        return ce * self.alpha * torch.log(lat) ** self.beta


class FBNet(OneShotStrategy):
    """Registry entry ``fbnet``: ``propose`` runs :class:`FBNetSearch` once."""

    name: ClassVar[str] = "fbnet"
    search_cls = FBNetSearch


