"""FBNet (Wu et al., CVPR 2019): Gumbel-softmax search with a latency-aware loss.

Every layer's candidates are weighted by a Gumbel-softmax sample ``m = softmax((α + g)/τ)``
of its logits at temperature ``τ``, annealed exponentially from ``τ0 = 5`` to the paper's
end point ``5 · 0.956^90 ≈ 0.09`` over the epochs after the warm-up (the paper's schedule
compressed to digits' epochs). The loss is

    CE(w, α) · α_l · log(LAT)^β · max(1, E[LAT]/T)^γ      (α_l = 0.2, β = 0.6)

with latencies from the TVM per-layer LUT, measured on the host
(:func:`~nasir.strategies.oneshot.common.decision_latency`), in µs so the log is positive
at digits' sub-millisecond scale. Two forms:

* ``hard=True`` (default): the supernet runs in ``gumbel_hard`` mode — the straight-through
  Gumbel-softmax of GDAS (Dong & Yang, CVPR 2019): only the candidate of largest ``m``
  runs, through a gate of value 1 whose gradient is ``∂m_k/∂α``; ``LAT`` is the sampled
  architecture's latency ``Σ_l m_l · LAT_l`` through the same gate (FBNet's ``LAT(a)``,
  whose expectation over the Gumbel noise is the expected latency; ``latency="sampled"``).
  A step costs one path, not the whole layer: on ``tiny_proxyless`` the search costs
  ≈ 0.5× training one child instead of 4.4×. With the expected latency instead
  (``latency="expected"``), its exact gradient overwhelms the single-path CE gradient:
  measured on 5 seeds, every search ended at or next to the cheapest network (every
  skippable layer ``zero``, the smallest MBConv elsewhere).
* ``hard=False``: the paper's soft mixture (``gumbel`` mode: every candidate runs, weighted
  by ``m``) with ``LAT`` the expected latency (softmax of the logits · per-option latency).

The last factor is only there with a target ``T`` (``target_us``): MnasNet's hard
constraint on the expected latency ``E[LAT]``, 1 under the target and steep above it
(``γ = constraint``); FBNet's own term does not depend on any target. The additive
per-layer table overestimates a compiled whole network (fusion, one runtime call), so
``calibrate=k`` fits ``measured = a · additive + b`` on ``k`` whole children compiled and
measured with TVM (:func:`~nasir.strategies.oneshot.common.calibrate_rows`) and uses the
corrected rows. As in FBNet, weights train on the first half of the training split for
``warmup`` epochs first (logits frozen), then weights and logits alternate. Derivation:
the argmax per decision, connectivity-aware (``none="connect"``: a cell whose every path
crosses a ``none`` edge gets its cheapest-to-switch edge back;
:func:`~nasir.strategies.oneshot.common.derive_from_probs`).

``latency_rows`` may be given directly (label → per-option µs) instead of a LUT.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
>>> r = FBNetSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.1,
...                 latency_rows=rows).search()
>>> r.extra["expected_latency_us"] > 0
True
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.device import resolve_device
from nasir.backends.torch.supernet import Supernet
from nasir.errors import SpecError
from nasir.space import Space
from nasir.strategies.controller import single_thread
from nasir.strategies.oneshot.common import (
    OneShotResult,
    OneShotStrategy,
    SearchData,
    calibrate_rows,
    cycle,
    decision_latency,
    derive_from_probs,
    frozen_logits,
    on_device,
    search_data,
    set_arch_grads,
    tvm_measure_us,
    weight_optimizer,
)

__all__ = ["FBNet", "FBNetSearch", "LatencySearch"]


class LatencySearch:
    """Shared machinery of the latency-aware searches (FBNet, ProxylessNAS); ``device``:
    where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``)."""

    method: ClassVar[str] = "latency"
    mode: ClassVar[str] = "gumbel"
    #: weight steps with the logits frozen (exact for Gumbel sampling; ProxylessNAS' two-
    #: path sampling depends on it, see :class:`~nasir.strategies.oneshot.proxylessnas.
    #: ProxylessSearch`)
    freeze_in_weight_steps: ClassVar[bool] = True

    def __init__(self, space: Space, seed: int = 0, *, epochs: int = 8, warmup: int = 2,
                 w_lr: float = 3e-3, a_lr: float = 5e-2, batch_size: int = 64,
                 data_fraction: float = 1.0, fixed: Mapping[str, Any] | None = None,
                 lut: Any = None, lut_path: str | None = None,
                 latency_rows: Mapping[str, Any] | None = None,
                 target_us: float | None = None, constraint: float = 4.0,
                 calibrate: int = 0, none: str = "connect", arch_every: int = 1,
                 a_betas: tuple[float, float] = (0.5, 0.999),
                 latency: str = "expected", device: str = "cpu") -> None:
        if latency not in ("expected", "sampled"):
            raise SpecError(f"unknown latency estimate {latency!r}",
                            hint="'expected' (softmax of the logits) or 'sampled' (the "
                                 "forward's Gumbel mask, FBNet's m; gumbel modes only)")
        if latency == "sampled" and self.mode not in ("gumbel", "gumbel_hard"):
            raise SpecError(f"latency='sampled' needs a Gumbel search, not {self.mode}")
        self.latency = latency
        if epochs < 1 or not 0 <= warmup < epochs:
            raise SpecError(f"need epochs >= 1 and 0 <= warmup < epochs, got {epochs}, "
                            f"{warmup}")
        if target_us is not None and not target_us > 1.0:
            raise SpecError(f"target_us must be > 1 µs, got {target_us}",
                            hint="the latency target T in microseconds")
        if constraint < 0 or calibrate < 0:
            raise SpecError("constraint and calibrate must be >= 0")
        self.target_us = None if target_us is None else float(target_us)
        self.constraint, self.calibrate, self.none = float(constraint), int(calibrate), none
        self.calibration: Any = None
        self.space, self.seed, self.epochs, self.warmup = space, int(seed), epochs, warmup
        self.w_lr, self.a_lr = w_lr, a_lr
        if arch_every < 1:
            raise SpecError(f"arch_every must be >= 1, got {arch_every}")
        self.arch_every = int(arch_every)
        self.a_betas = (float(a_betas[0]), float(a_betas[1]))
        self.batch_size, self.data_fraction = batch_size, data_fraction
        self.fixed = dict(fixed or {})
        self.lut, self.lut_path = lut, lut_path
        self.latency_rows = dict(latency_rows) if latency_rows is not None else None
        self.device = resolve_device(device)
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
            if self.calibrate:
                self.calibration = calibrate_rows(
                    self.space, self.latency_rows, tvm_measure_us(self.space),
                    children=self.calibrate, seed=self.seed, fixed=self.fixed)
                self.latency_rows = self.calibration.apply(self.latency_rows)
        out = {}
        for k, v in self.latency_rows.items():
            v = np.asarray(v, dtype=np.float64)
            finite = v[np.isfinite(v)]
            out[k] = np.where(np.isfinite(v), v, 10 * (finite.max() if finite.size else 1))
        return out

    def _lat_fns(self, net: Supernet) -> tuple[Any, Any]:
        """``(expected, sampled)``: the latency (µs) under the softmax of the logits, and
        under the last forward's Gumbel mask (:attr:`Supernet.last_mask`)."""
        rows = self.rows()
        keys = {lb: lb.replace(".", "__") for lb in net.decisions()}
        tabs = {lb: torch.tensor(rows[lb], dtype=torch.float32, device=self.device)
                for lb in keys if lb in rows}

        def latency(weights: Any) -> torch.Tensor:
            lat = torch.zeros(())
            for lb, t in tabs.items():
                lat = lat + (weights(lb) * t).sum()
            return lat.clamp_min(1.0 + 1e-6)

        def expected() -> torch.Tensor:
            return latency(lambda lb: F.softmax(net.alphas[keys[lb]], -1))

        def sampled() -> torch.Tensor:
            return latency(lambda lb: net.last_mask[lb])

        return expected, sampled

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """The method's own latency-aware architecture loss; the search multiplies it by
        :meth:`over_target` of the expected latency."""
        raise NotImplementedError

    def supernet_options(self) -> dict[str, Any]:
        """Extra :class:`~nasir.backends.torch.supernet.Supernet` arguments."""
        return {}

    def after_arch_step(self, net: Supernet, before: Mapping[str, torch.Tensor]) -> None:
        """Hook after each architecture step (``before``: the logits before it)."""

    def over_target(self, lat: torch.Tensor) -> torch.Tensor:
        """MnasNet's hard-constraint factor ``max(1, LAT/T)^γ`` (1 without a target): no
        effect under the target, a steep latency gradient above it, so a lower ``T``
        gives a faster network (the papers' own terms only rescale with ``T``)."""
        if self.target_us is None or self.constraint == 0:
            return torch.ones(())
        return (lat / self.target_us).clamp_min(1.0) ** self.constraint

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        """Per-epoch hook (temperature annealing)."""

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Warm up weights, then alternate weight and architecture steps; derive argmax."""
        t0 = time.perf_counter()
        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else search_data(
                self.batch_size, self.seed, self.data_fraction, self.device)
            net = self.net = Supernet(self.space, mode=self.mode, seed=self.seed,
                                      fixed=self.fixed, **self.supernet_options()
                                      ).to(self.device)
            expected, sampled = self._lat_fns(net)
            wopt = weight_optimizer(net, "adam", self.w_lr, 0.9, 0.0)
            aopt = torch.optim.Adam(net.arch_parameters(), lr=self.a_lr, betas=self.a_betas)
            arch_it = cycle(data.train_a)
            history: list[dict[str, Any]] = []
            for ep in range(self.epochs):
                self._set_tau(net, ep)
                losses = []
                for step, (x, y) in enumerate(data.train_w):
                    if ep >= self.warmup and step % self.arch_every == 0:
                        xa, ya = next(arch_it)
                        aopt.zero_grad()
                        ce = F.cross_entropy(net(xa), ya)
                        exp = expected()
                        lat = sampled() if self.latency == "sampled" else exp
                        # the target constrains the expected latency (its exact gradient,
                        # whichever LAT the own term uses): with a sampled one, a single
                        # draw's gradient barely moves the logits once a draw is under T
                        # while the argmax child is still above it
                        set_arch_grads(net, self.arch_loss(ce, lat) * self.over_target(exp))
                        before = {k: v.detach().clone() for k, v in net.alphas.items()}
                        aopt.step()
                        self.after_arch_step(net, before)
                    wopt.zero_grad()
                    with frozen_logits(net) if self.freeze_in_weight_steps else nullcontext():
                        loss = F.cross_entropy(net(x), y)
                        loss.backward()
                    wopt.step()
                    losses.append(loss.item())
                history.append({"epoch": ep, "loss": float(np.mean(losses)),
                                "expected_latency_us": float(expected().detach())})
            probs = {lb: F.softmax(net.alphas[lb.replace(".", "__")].detach(), -1).cpu()
                     .numpy() for lb in net.decisions()}
            a = self.space.check(derive_from_probs(self.space, probs, net.fixed, self.none))
            lat = float(expected().detach())
        extra = {"expected_latency_us": lat, "predicted_latency_us": self.predict(a),
                 "target_us": self.target_us, "device": str(self.device),
                 "arch_probs": {k: v.round(4).tolist() for k, v in probs.items()}}
        if self.calibration is not None:
            extra["calibration"] = self.calibration.to_json()
        return OneShotResult(self.method, a, time.perf_counter() - t0, self.epochs, history,
                             extra)

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
                 tau0: float = 5.0, tau_end: float = 5.0 * 0.956 ** 90, hard: bool = True,
                 **kw: Any) -> None:
        kw.setdefault("latency", "sampled" if hard else "expected")
        super().__init__(space, seed, **kw)
        if not 0 < tau_end <= tau0:
            raise SpecError(f"need 0 < tau_end <= tau0, got {tau_end}, {tau0}")
        self.alpha, self.beta, self.tau0, self.tau_end = alpha, beta, tau0, tau_end
        #: ``gumbel`` (the paper's soft mixture) or ``gumbel_hard`` (straight-through)
        self.mode = "gumbel_hard" if hard else "gumbel"  # type: ignore[misc]

    def tau(self, epoch: int) -> float:
        """Exponential annealing from ``tau0`` to ``tau_end`` over the epochs after the
        warm-up (FBNet: 5 · 0.956^epoch over 90 epochs; the same end points here)."""
        span = max(1, self.epochs - self.warmup - 1)
        k = min(max(0, epoch - self.warmup), span)
        return float(self.tau0 * (self.tau_end / self.tau0) ** (k / span))

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        net.set_mode(self.mode, tau=self.tau(epoch))

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``CE · α · log(LAT)^β`` (FBNet's loss; the target factor is the search's)."""
        return ce * self.alpha * torch.log(lat) ** self.beta


class FBNet(OneShotStrategy):
    """Registry entry ``fbnet``: ``propose`` runs :class:`FBNetSearch` once."""

    name: ClassVar[str] = "fbnet"
    search_cls = FBNetSearch


