"""FBNet's and ProxylessNAS' latency-aware search as a resumable job: one epoch a step
(:mod:`~nasir.strategies.oneshot.supernet_job`), the per-batch weight and architecture
steps in their own methods.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> from nasir.strategies.oneshot.fbnet import FBNetSearch
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
>>> s = FBNetSearch(sp, seed=0, epochs=3, warmup=1, data_fraction=0.05, latency_rows=rows)
>>> job = s.make_job(); _ = job.step(); _ = job.step()
>>> import io, torch
>>> buf = io.BytesIO(); torch.save(job.state_dict(), buf); _ = buf.seek(0)
>>> again = s.make_job(); again.load_state_dict(torch.load(buf, weights_only=True))
>>> again.step()["probs"] == job.step()["probs"]
True
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.supernet import Supernet
from nasir.strategies.oneshot.common import (
    LatencyCalibration,
    OneShotResult,
    derive_from_probs,
    frozen_logits,
    set_arch_grads,
    weight_optimizer,
)
from nasir.strategies.oneshot.darts_job import probs_record
from nasir.strategies.oneshot.supernet_job import ResumableCycle, SupernetJob

__all__ = ["LatencyJob"]


class LatencyJob(SupernetJob):
    """The supernet search of a :class:`~nasir.strategies.oneshot.fbnet.LatencySearch`."""

    def __init__(self, searcher: Any, data: Any) -> None:
        super().__init__(searcher, data)
        s = searcher
        self.cfg = s.settings
        net = self.net = s.net = Supernet(s.space, mode=s.mode, seed=s.seed, fixed=s.fixed,
                                          **s.supernet_options()).to(s.device)
        self.expected, self.sampled = s._lat_fns(net)
        self.optimizers = {
            "w": weight_optimizer(net, "adam", self.cfg.w_lr, 0.9, 0.0),
            "a": torch.optim.Adam(net.arch_parameters(), lr=self.cfg.a_lr,
                                  betas=self.cfg.a_betas)}
        self.arch_it = ResumableCycle(data.train_a)
        self._capture_rng()

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the latency rows the search uses (measured, maybe
        calibrated): a resumed job keeps them instead of measuring again, which could
        differ."""
        s = self.searcher
        cal = s.calibration.to_json() if s.calibration is not None else None
        return {**super().state_dict(),
                "latency_rows": {k: [float(x) for x in v] for k, v in s.rows().items()},
                "calibration": cal}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` with its latency rows."""
        super().load_state_dict(state)
        s = self.searcher
        s.latency_rows = {k: np.asarray(v, dtype=np.float64)
                          for k, v in state["latency_rows"].items()}
        cal = state.get("calibration")
        s.calibration = None if cal is None else LatencyCalibration(
            float(cal["scale"]), float(cal["offset"]),
            [(float(a), float(b)) for a, b in cal["points"]])
        self.expected, self.sampled = s._lat_fns(self.net)

    # -- one batch -----------------------------------------------------------------------------
    def arch_step(self, xa: Any, ya: Any) -> None:
        """One architecture step: the method's latency-aware loss on an architecture batch,
        times the target factor of the expected latency; then the method's hook."""
        net, aopt, cfg = self.net, self.optimizers["a"], self.cfg
        aopt.zero_grad()
        ce = F.cross_entropy(net(xa), ya)
        exp = self.expected()
        lat = self.sampled() if cfg.latency == "sampled" else exp
        # the target constrains the expected latency (its exact gradient, whichever LAT the
        # own term uses): with a sampled one, a single draw's gradient barely moves the
        # logits once a draw is under T while the argmax child is still above it
        set_arch_grads(net, self.searcher.arch_loss(ce, lat) * self.searcher.over_target(exp))
        before = {k: v.detach().clone() for k, v in net.alphas.items()}
        aopt.step()
        self.searcher.after_arch_step(net, before)

    def weight_step(self, x: Any, y: Any) -> float:
        """One weight step (logits frozen unless the method samples with them); the loss."""
        net, wopt = self.net, self.optimizers["w"]
        wopt.zero_grad()
        with frozen_logits(net) if self.searcher.freeze_in_weight_steps else nullcontext():
            loss = F.cross_entropy(net(x), y)
            loss.backward()
        wopt.step()
        return float(loss.item())

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(self, epoch: int) -> dict[str, Any]:
        cfg, net = self.cfg, self.net
        assert self.arch_it is not None
        self.searcher._set_tau(net, epoch)
        losses = []
        for step, (x, y) in enumerate(self.data.train_w):
            if epoch >= cfg.warmup and step % cfg.arch_every == 0:
                xa, ya = next(self.arch_it)
                self.arch_step(xa, ya)
            losses.append(self.weight_step(x, y))
        return {"epoch": epoch, "loss": float(np.mean(losses)),
                "expected_latency_us": float(self.expected().detach()),
                "probs": probs_record(self.probs())}

    def probs(self) -> dict[str, np.ndarray]:
        """Softmax of each decision's logits (gate probabilities)."""
        net = self.net
        return {lb: F.softmax(net.alphas[lb.replace(".", "__")].detach(), -1).cpu().numpy()
                for lb in net.decisions()}

    def _derive(self) -> OneShotResult:
        s, cfg, net = self.searcher, self.cfg, self.net
        probs = self.probs()
        a = s.space.check(derive_from_probs(s.space, probs, net.fixed, cfg.none))
        lat = float(self.expected().detach())
        extra = {"expected_latency_us": lat, "predicted_latency_us": s.predict(a),
                 "target_us": s.target_us, "device": str(s.device),
                 "arch_probs": {k: v.round(4).tolist() for k, v in probs.items()},
                 "variant": s.variant, "settings": cfg.to_json(),
                 "changed": dict(s.changed), "mode": s.mode}
        if s.calibration is not None:
            extra["calibration"] = s.calibration.to_json()
        return OneShotResult(s.method, a, self.wall_s, s.epochs, list(self.history), extra)
