"""FBNet (Wu et al., CVPR 2019): Gumbel-softmax search with a latency-aware loss.

Every layer's candidates are weighted by a Gumbel-softmax sample ``m = softmax((α + g)/τ)``
of its logits at temperature ``τ``. The paper (§3.3–4.1) initialises ``τ = 5.0`` and
anneals it by ``exp(−0.045) ≈ 0.956`` every epoch over 90 epochs; here ``τ`` goes
exponentially from 5.0 to the paper's end point ``5 · 0.956^90 ≈ 0.09`` over the epochs
after the warm-up (the schedule scaled to the run's epochs). The loss is the paper's

    CE(w, α) · α_l · log(LAT(a))^β        (α_l = 0.2, β = 0.6)

with ``LAT(a) = Σ_l Σ_i m_{l,i} · LAT(b_{l,i})``: the latency of the sampled architecture
under the forward's own Gumbel mask ``m`` (``latency="sampled"``), per-option latencies
from the TVM per-layer LUT measured on the host
(:func:`~nasir.strategies.oneshot.common.decision_latency`), in µs so the log is positive
at digits' sub-millisecond scale.

**Variants** (registry names; :class:`FBNetSettings`; every run records ``variant``, all
``settings`` and what was ``changed`` in its result's ``extra``):

``fbnet`` — the paper's: a soft mixture (``gumbel`` mode: every candidate runs, weighted
by ``m``), so every candidate of a layer gets gradient each step.

``fbnet_gdas`` — the same loss with GDAS' straight-through Gumbel estimator (Dong & Yang,
CVPR 2019; ``hard=True``, ``gumbel_hard`` mode): only the candidate of largest ``m`` runs,
through a gate of value 1 whose gradient is ``∂m_k/∂α``, and ``LAT`` is the sampled
architecture's latency through the same gate. One path a step: on ``tiny_proxyless`` the
search costs ≈ 0.7× training one child instead of 4.4× (notes/issue-9.md). With the
expected latency instead (``latency="expected"``) its exact gradient overwhelms the
single-path CE gradient (every search ended at or next to the cheapest network).

Not the paper's in both (digits' budgets, notes/issue-21-oneshot.md): weights train with
Adam (lr 3e-3) and logits with Adam lr 0.05 every step after 2 of 8 warm-up epochs (the
paper: SGD for weights, Adam for θ, alternating by epoch, 90 epochs on ImageNet-100).

A latency target ``T`` (``target_us``; the paper has none, so it is off by default)
multiplies the loss by MnasNet's hard-constraint factor ``max(1, E[LAT]/T)^γ`` on the
expected latency (``γ = constraint``). The additive per-layer table overestimates a
compiled whole network (fusion, one runtime call), so ``calibrate=k`` fits
``measured = a · additive + b`` on ``k`` whole children compiled and measured with TVM
(:func:`~nasir.strategies.oneshot.common.calibrate_rows`) and uses the corrected rows.
Weights train on the first half of the training split for ``warmup`` epochs first (logits
frozen), then weights and logits alternate. Derivation: the argmax per decision,
connectivity-aware (``none="connect"``: a cell whose every path crosses a ``none`` edge
gets its cheapest-to-switch edge back;
:func:`~nasir.strategies.oneshot.common.derive_from_probs`).

``latency_rows`` may be given directly (label → per-option µs) instead of a LUT.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
>>> r = FBNetSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.1,
...                 latency_rows=rows).search()
>>> r.extra["expected_latency_us"] > 0, r.extra["variant"], r.extra["mode"]
(True, 'fbnet', 'gumbel')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    DEFAULT_LUT_PATH,
    OneShotResult,
    SearchData,
    SearchSettings,
    calibrate_rows,
    decision_latency,
    on_device,
    resolve_variant,
    search_data,
    tvm_measure_us,
)
from nasir.strategies.oneshot.strategy import OneShotStrategy
from nasir.strategies.oneshot.supernet_job import run_job_search

__all__ = ["FBNet", "FBNetGDAS", "FBNetSearch", "FBNetSettings", "LatencySearch",
           "LatencySettings"]


@dataclass(frozen=True)
class LatencySettings(SearchSettings):
    """Settings shared by the latency-aware searches (FBNet, ProxylessNAS).

    Attributes:
        epochs, warmup: passes over the weight half; the leading ``warmup`` train weights
            only.
        w_lr: the weights' Adam lr (tuned to digits' budgets, not the papers' SGD).
        a_lr, a_betas: the architecture Adam.
        batch_size, data_fraction: images a step; fraction of the training split used.
        target_us: a latency target ``T`` (µs); FBNet has none by default.
        constraint: ``γ`` of MnasNet's hard-constraint factor ``max(1, E[LAT]/T)^γ`` on the
            architecture loss (0: none; only with a target).
        calibrate: whole children measured to calibrate LUT rows (0: none).
        none: derivation policy for ``none``/``zero`` options (``connect`` keeps a path).
        arch_every: an architecture step every ``arch_every`` weight steps.
        latency: ``expected`` (softmax of the logits · per-option latency) or ``sampled``
            (the forward's Gumbel mask ``m``: FBNet's ``LAT(a) = Σ m · LAT``).
    """

    epochs: int = 8
    warmup: int = 2
    w_lr: float = 3e-3
    a_lr: float = 5e-2
    a_betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 64
    data_fraction: float = 1.0
    target_us: float | None = None
    constraint: float = 4.0
    calibrate: int = 0
    none: str = "connect"
    arch_every: int = 1
    latency: str = "expected"

    def __post_init__(self) -> None:
        object.__setattr__(self, "a_betas", tuple(float(b) for b in self.a_betas))
        checks = [
            (self.latency in ("expected", "sampled"),
             f"unknown latency estimate {self.latency!r}",
             "'expected' (softmax of the logits) or 'sampled' (the forward's Gumbel mask, "
             "FBNet's m; gumbel modes only)"),
            (self.epochs >= 1 and 0 <= self.warmup < self.epochs,
             f"need epochs >= 1 and 0 <= warmup < epochs, got {self.epochs}, {self.warmup}",
             ""),
            (self.target_us is None or self.target_us > 1.0,
             f"target_us must be > 1 µs, got {self.target_us}",
             "the latency target T in microseconds"),
            (self.constraint >= 0 and self.calibrate >= 0,
             "constraint and calibrate must be >= 0", ""),
            (self.arch_every >= 1, f"arch_every must be >= 1, got {self.arch_every}", ""),
            (self.none in ("keep", "exclude", "connect"), f"unknown none policy {self.none!r}",
             "use 'keep', 'exclude' or 'connect'"),
        ]
        for ok, msg, hint in checks:
            if not ok:
                raise SpecError(msg, where="latency search settings", hint=hint or None)


class LatencySearch:
    """Shared machinery of the latency-aware searches (FBNet, ProxylessNAS): ``variant``
    (a registry name of :attr:`variants`) gives the settings, ``options`` override single
    ones; ``latency_rows`` (label → per-option µs) or ``lut``/``lut_path`` give latencies;
    ``device``: where the supernet trains (``cpu``, ``auto``, ``cuda``, ``cuda:N``,
    ``mps``)."""

    method: ClassVar[str] = "latency"
    #: registry name → settings
    variants: ClassVar[Mapping[str, LatencySettings]] = {}
    #: weight steps with the logits frozen (exact for Gumbel sampling; ProxylessNAS' two-
    #: path sampling depends on it, see :class:`~nasir.strategies.oneshot.proxylessnas.
    #: ProxylessSearch`)
    freeze_in_weight_steps: ClassVar[bool] = True

    def __init__(self, space: Space, seed: int = 0, *, variant: str | None = None,
                 fixed: Mapping[str, Any] | None = None, lut: Any = None,
                 lut_path: str | None = None, latency_rows: Mapping[str, Any] | None = None,
                 device: str = "cpu", **options: Any) -> None:
        variant = variant or self.method
        cfg = resolve_variant(self.variants, variant, options, self.method)
        assert isinstance(cfg, LatencySettings)
        #: the registry name of the variant and its settings with the options applied
        self.variant, self.settings = variant, cfg
        #: the settings the options changed from the variant's
        self.changed = cfg.changed_from(self.variants[variant])
        self.mode = self.mode_of(cfg)
        if cfg.latency == "sampled" and self.mode not in ("gumbel", "gumbel_hard"):
            raise SpecError(f"latency='sampled' needs a Gumbel search, not {self.mode}")
        self.calibration: Any = None
        self.space, self.seed, self.epochs = space, int(seed), cfg.epochs
        self.target_us = cfg.target_us
        self.fixed = dict(fixed or {})
        self.lut, self.lut_path = lut, lut_path
        self.latency_rows = dict(latency_rows) if latency_rows is not None else None
        self.device = resolve_device(device)
        self.net: Supernet | None = None

    def mode_of(self, cfg: LatencySettings) -> str:
        """The supernet mode these settings search in."""
        raise NotImplementedError

    def rows(self) -> dict[str, np.ndarray]:
        """Per-option latency (µs) of each free decision (from the LUT unless given)."""
        if self.latency_rows is None:
            lut = self.lut
            if lut is None:
                from nasir.backends.tvm.lut import LatencyLUT
                from nasir.backends.tvm.measure import MeasureConfig

                lut = LatencyLUT(self.lut_path or DEFAULT_LUT_PATH, "host",
                                 config=MeasureConfig(repeats=5, min_repeat_ms=2))
            ms = decision_latency(self.space, lut, self.fixed)
            self.latency_rows = {k: v * 1000.0 for k, v in ms.items()}
            if self.settings.calibrate:
                self.calibration = calibrate_rows(
                    self.space, self.latency_rows, tvm_measure_us(self.space),
                    children=self.settings.calibrate, seed=self.seed, fixed=self.fixed)
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
        if self.target_us is None or self.settings.constraint == 0:
            return torch.ones(())
        return (lat / self.target_us).clamp_min(1.0) ** self.settings.constraint

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        """Per-epoch hook (temperature annealing)."""

    def data_for(self, splits: Any = None) -> SearchData:
        """The search's loaders: ``splits`` (the run's data; digits when ``None``) cut in
        the weight and architecture halves, batched on the search's device."""
        cfg = self.settings
        return search_data(cfg.batch_size, self.seed, cfg.data_fraction, self.device, splits)

    def make_job(self, data: SearchData | None = None) -> Any:
        """The search as a resumable :class:`~nasir.strategies.oneshot.latency_job.
        LatencyJob` (one epoch a step) on ``data`` (default: :meth:`data_for` digits)."""
        from nasir.strategies.oneshot.latency_job import LatencyJob

        with single_thread():
            torch.manual_seed(self.seed)
            data = on_device(data, self.device) if data is not None else self.data_for()
            return LatencyJob(self, data)

    def search(self, data: SearchData | None = None) -> OneShotResult:
        """Warm up weights, then alternate weight and architecture steps; derive argmax."""
        result: OneShotResult = run_job_search(self.make_job, data)
        return result

    def predict(self, a: Mapping[str, Any]) -> float:
        """Additive-table latency (µs) of an assignment."""
        rows = self.rows()
        return float(sum(rows[d.label][d.index(a[d.label])] for d in self.space.decisions
                         if d.label in rows and d.label in a))


@dataclass(frozen=True)
class FBNetSettings(LatencySettings):
    """FBNet's settings: the paper's loss ``CE · α · log(LAT)^β`` (``alpha``, ``beta``), the
    Gumbel temperature annealed from ``tau0`` to ``tau_end`` (the paper: 5.0 · 0.956 per
    epoch over 90 epochs, the same end points over the run's epochs), ``hard``: the
    straight-through one-path estimator (GDAS) instead of the soft mixture."""

    alpha: float = 0.2
    beta: float = 0.6
    tau0: float = 5.0
    tau_end: float = 5.0 * 0.956 ** 90
    hard: bool = False
    latency: str = "sampled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.tau_end <= self.tau0:
            raise SpecError(f"need 0 < tau_end <= tau0, got {self.tau_end}, {self.tau0}")


class FBNetSearch(LatencySearch):
    """FBNet search (see the module docstring); ``variant``: ``fbnet`` (the paper's soft
    mixture) or ``fbnet_gdas`` (straight-through one path); options override
    :class:`FBNetSettings` fields."""

    method: ClassVar[str] = "fbnet"
    variants: ClassVar[Mapping[str, LatencySettings]] = {
        "fbnet": FBNetSettings(),
        "fbnet_gdas": FBNetSettings(hard=True),
    }

    def mode_of(self, cfg: LatencySettings) -> str:
        """``gumbel`` (soft mixture) or ``gumbel_hard`` (straight-through, one path)."""
        return "gumbel_hard" if getattr(cfg, "hard", False) else "gumbel"

    @property
    def cfg(self) -> FBNetSettings:
        """The settings, typed."""
        assert isinstance(self.settings, FBNetSettings)
        return self.settings

    def tau(self, epoch: int) -> float:
        """Exponential annealing from ``tau0`` to ``tau_end`` over the epochs after the
        warm-up (FBNet: 5 · 0.956^epoch over 90 epochs; the same end points here)."""
        c = self.cfg
        span = max(1, self.epochs - c.warmup - 1)
        k = min(max(0, epoch - c.warmup), span)
        return float(c.tau0 * (c.tau_end / c.tau0) ** (k / span))

    def _set_tau(self, net: Supernet, epoch: int) -> None:
        net.set_mode(self.mode, tau=self.tau(epoch))

    def arch_loss(self, ce: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``CE · α · log(LAT)^β`` (FBNet's loss; the target factor is the search's)."""
        return ce * self.cfg.alpha * torch.log(lat) ** self.cfg.beta


class FBNet(OneShotStrategy):
    """Registry entry ``fbnet``: the paper's soft Gumbel-softmax mixture with its latency
    loss (:class:`FBNetSearch`): a search job of the run, then the derived children as
    trials (:mod:`~nasir.strategies.oneshot.strategy`)."""

    name: ClassVar[str] = "fbnet"
    variant: ClassVar[str | None] = "fbnet"
    search_cls = FBNetSearch


class FBNetGDAS(FBNet):
    """Registry entry ``fbnet_gdas``: FBNet's loss with GDAS' straight-through one-path
    Gumbel estimator (``hard=True``)."""

    name: ClassVar[str] = "fbnet_gdas"
    variant: ClassVar[str | None] = "fbnet_gdas"
