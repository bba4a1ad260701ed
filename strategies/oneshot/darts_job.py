"""DARTS' bilevel search as a resumable job: one epoch a step (:mod:`~nasir.strategies.
oneshot.supernet_job`), the per-batch weight and architecture steps in their own methods.

>>> from nasir.spaces import get_space
>>> from nasir.strategies.oneshot.darts import DartsSearch
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> s = DartsSearch(sp, seed=0, epochs=2, data_fraction=0.05, order=1)
>>> job = s.make_job()
>>> rec = job.step()
>>> rec["step"], rec["epoch"], sorted(rec["probs"]) == sorted(d.label for d in sp.decisions)
(0, 0, True)
>>> import io, torch
>>> buf = io.BytesIO(); torch.save(job.state_dict(), buf); _ = buf.seek(0)
>>> again = s.make_job(); again.load_state_dict(torch.load(buf, weights_only=True))
>>> again.step()["loss"] == job.step()["loss"]
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasir.space import Assignment
from nasir.strategies.oneshot.common import (
    OneShotResult,
    cycle,
    frozen_logits,
    set_arch_grads,
    weight_optimizer,
)
from nasir.strategies.oneshot.darts_select import arch_probs, discretize
from nasir.strategies.oneshot.supernet_job import ResumableCycle, SupernetJob

__all__ = ["DartsJob", "probs_record"]


def probs_record(probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Architecture probabilities as JSON lists (rounded to 6 digits)."""
    return {k: np.round(np.asarray(v, dtype=np.float64), 6).tolist() for k, v in probs.items()}


class DartsJob(SupernetJob):
    """The supernet search of :class:`~nasir.strategies.oneshot.darts.DartsSearch`."""

    def __init__(self, searcher: Any, data: Any) -> None:
        super().__init__(searcher, data)
        cfg = self.cfg = searcher.settings
        net = self.net = searcher.net = searcher._build()
        wopt = weight_optimizer(net, cfg.w_optimizer, cfg.w_lr, cfg.w_momentum,
                                cfg.w_weight_decay)
        self.per_step = cfg.lr_schedule == "step"
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            wopt, searcher.epochs * (len(data.train_w) if self.per_step else 1),
            eta_min=cfg.w_lr_min)
        aopt = torch.optim.Adam(net.arch_parameters(), lr=cfg.a_lr, betas=cfg.a_betas,
                                weight_decay=cfg.a_weight_decay)
        self.optimizers = {"w": wopt, "a": aopt}
        self.schedulers = {"w": sched}
        self.arch_it = ResumableCycle(data.train_a)
        self._capture_rng()

    # -- one batch -----------------------------------------------------------------------------
    def arch_step(self, xw: Any, yw: Any, xa: Any, ya: Any) -> None:
        """One architecture step on a batch of the architecture half (second order: the
        gradient at the unrolled weights, using the weight batch ``xw, yw``)."""
        net, aopt = self.net, self.optimizers["a"]
        aopt.zero_grad()
        if self.searcher.order == 1:
            set_arch_grads(net, F.cross_entropy(net(xa), ya))
        else:
            grads = self.searcher._arch_grad_unrolled(net, xw, yw, xa, ya,
                                                      self.optimizers["w"])
            for p, g in zip(net.arch_parameters(), grads):
                p.grad = g
        aopt.step()

    def weight_step(self, xw: Any, yw: Any) -> float:
        """One weight step (logits frozen, gradient norm clipped); the batch's loss."""
        net, wopt = self.net, self.optimizers["w"]
        wopt.zero_grad()
        with frozen_logits(net):
            loss = F.cross_entropy(net(xw), yw)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), self.cfg.grad_clip)
        wopt.step()
        return float(loss.item())

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(self, epoch: int) -> dict[str, Any]:
        cfg, net, sched = self.cfg, self.net, self.schedulers["w"]
        assert self.arch_it is not None
        net.train()
        lr = float(self.optimizers["w"].param_groups[0]["lr"])
        losses = []
        for xw, yw in self.data.train_w:
            if epoch >= cfg.warmup:
                xa, ya = next(self.arch_it)
                self.arch_step(xw, yw, xa, ya)
            losses.append(self.weight_step(xw, yw))
            if self.per_step:
                sched.step()
        if not self.per_step:
            sched.step()
        return {"epoch": epoch, "loss": float(np.mean(losses)), "w_lr": lr,
                "derived": Assignment(discretize(net, cfg.none)).to_json(),
                "probs": probs_record(arch_probs(net))}

    def _derive(self) -> OneShotResult:
        s, cfg, net = self.searcher, self.cfg, self.net
        selected = self._select()
        a = s.space.check(discretize(net, cfg.none) | selected)
        probs = {k: v.round(4).tolist() for k, v in arch_probs(net).items()}
        return OneShotResult(s.method, a, self.wall_s, s.epochs, list(self.history),
                             {"arch_probs": probs, "order": s.order,
                              "device": str(s.device), "variant": s.variant,
                              "settings": cfg.to_json(), "changed": dict(s.changed),
                              "arch_logits": sum(p.numel() for p in net.arch_parameters()),
                              "cell_nodes": {k: {"in_labels": list(c.in_labels),
                                                 "op_labels": list(c.op_labels),
                                                 "inputs": list(c.inputs),
                                                 "ops": list(c.ops)}
                                             for k, c in net.cell_edges.items()}})

    def _select(self) -> dict[str, Any]:
        """DARTS-PT's selection (``select="pt"``) after the search, by the searcher's
        :meth:`~nasir.strategies.oneshot.darts.DartsSearch.select_pt`; ``{}`` for
        argmax."""
        cfg, net, wopt = self.cfg, self.net, self.optimizers["w"]
        if cfg.select != "pt":
            return {}
        w_it = cycle(self.data.train_w)

        def tune() -> None:
            with frozen_logits(net):
                for _ in range(cfg.pt_tune_steps):
                    xw, yw = next(w_it)
                    wopt.zero_grad()
                    F.cross_entropy(net(xw), yw).backward()
                    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), cfg.grad_clip)
                    wopt.step()

        batches = list(self.data.train_a)
        if cfg.pt_images is not None:
            x = torch.cat([b[0] for b in batches])[:cfg.pt_images]
            y = torch.cat([b[1] for b in batches])[:cfg.pt_images]
            batches = [(x, y)]
        return dict(self.searcher.select_pt(net, batches, tune))
