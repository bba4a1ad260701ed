"""ENAS's shared-weight training as a runner job (:class:`EnasWeightsJob`) and its data.

Under the runner (:class:`~nasir.strategies.oneshot.enas_runner.Enas`) ENAS trains its
shared weights in one :class:`~nasir.strategies.jobs.SearchJob` named ``enas-shared``
whose steps are the search's epochs: before epoch ``e``'s controller steps the strategy
hands the runner the job with ``total_steps = e + 1``; the runner loads the checkpoint of
the ``e`` epochs before (``<run>/jobs/enas-shared.pt``), runs step ``e`` — one pass over
the weight half, a child freshly sampled from the controller per batch, exactly
:meth:`EnasSearch._train_weights` — and checkpoints it. The checkpoint is therefore the
run's *current* shared weights; a child proposed after epoch ``e`` is scored with the
weights of ``steps_done == e + 1``, and the estimator checks that version
(:mod:`nasir.runtime.shared_weights`).

A step is deterministic given the checkpoint it starts from: the paths are drawn from a
generator seeded by ``(seed, epoch)``, the batch order from a torch generator seeded the
same way, and torch's global RNG state travels in the checkpoint.

>>> from nasir.backends.torch.data import digits_splits
>>> d = search_halves(digits_splits(), batch_size=32, seed=0, fraction=0.1)
>>> sum(len(y) for _, y in d.train_w) + sum(len(y) for _, y in d.train_a)
108
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Subset

from nasir.backends.torch.batches import device_loader
from nasir.errors import NasirError
from nasir.strategies.controller import Controller, single_thread
from nasir.strategies.jobs import SearchJob
from nasir.strategies.oneshot.common import SearchData

if TYPE_CHECKING:
    from nasir.backends.torch.supernet import Supernet
    from nasir.strategies.oneshot.enas import EnasSearch

__all__ = ["JOB_NAME", "EnasWeightsJob", "search_halves", "shared_supernet"]

#: the name of ENAS's shared-weight job (and of its checkpoint file)
JOB_NAME = "enas-shared"


def search_halves(splits: Any, batch_size: int, seed: int, fraction: float,
                  device: str | torch.device = "cpu") -> SearchData:
    """The training split of ``splits`` (a
    :class:`~nasir.backends.torch.data.DataSplits`) cut as
    :func:`~nasir.strategies.oneshot.common.search_data` cuts digits': a seeded
    ``fraction``, the first half training weights, the second scoring children; each half
    has its own seeded order generator (``generator`` attribute of the loader), so a step
    can reseed it. ``val`` is ``None``."""
    from nasir.backends.torch.device import resolve_device

    dev = resolve_device(device)
    n = len(splits.train)
    idx = np.random.default_rng(seed).permutation(n)[:max(2, round(n * fraction))]
    half = len(idx) // 2

    def load(part: np.ndarray) -> Any:
        g = torch.Generator().manual_seed(seed)
        loader = device_loader(Subset(splits.train, sorted(part.tolist())), batch_size,
                               shuffle=True, generator=g, device=dev)
        return loader, g

    (w, gw), (a, _) = load(idx[:half]), load(idx[half:])
    w.order_generator = gw
    return SearchData(w, a, None)


def shared_supernet(space: Any, seed: int, fixed: dict[str, Any] | None,
                    device: str | torch.device = "cpu") -> Supernet:
    """The single-path supernet ENAS shares (as :class:`EnasSearch` builds it)."""
    from nasir.backends.torch.supernet import Supernet

    return Supernet(space, mode="single", seed=seed, fixed=fixed or None,
                    per_input_ops=True).to(device)


class EnasWeightsJob(SearchJob):
    """Epochs ``0 … total_steps-1`` of ENAS's shared weights (see the module docstring).

    ``searcher``: the :class:`EnasSearch` whose settings, weight optimizer and weight pass
    are used; ``ctrl``: the controller that samples each batch's path (read only);
    ``data``: returns the :class:`SearchData` halves; ``start``: the state of the epochs
    before (the previous job's :meth:`state_dict`), when the runner has no checkpoint to
    load instead.
    """

    name = JOB_NAME

    def __init__(self, searcher: EnasSearch, ctrl: Controller, labels: list[str],
                 data: Callable[[], SearchData], epochs: int,
                 start: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.total_steps = int(epochs)
        self.searcher, self.ctrl, self.labels, self._data = searcher, ctrl, labels, data
        self.state: dict[str, Any] = dict(start or {"steps_done": 0})
        self.steps_done = int(self.state["steps_done"])
        self.record: dict[str, Any] = dict(self.state.get("record") or {})

    def _step(self) -> dict[str, Any]:
        s, cfg, epoch = self.searcher, self.searcher.settings, self.steps_done
        if epoch and "weights" not in self.state:
            raise NasirError(f"ENAS's shared weights of epochs 0-{epoch - 1} are missing",
                             where=f"job {self.name}",
                             hint="run it through the runner, which keeps its checkpoint")
        data = self._data()
        with single_thread():
            torch.manual_seed(s.seed)
            net = shared_supernet(s.space, s.seed, s.fixed, s.device)
            wopt = s._weight_optimizer(net)
            steps = cfg.epochs * len(data.train_w)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                wopt, steps, eta_min=cfg.w_lr_min) if cfg.lr_schedule == "cosine" else None
            if epoch:
                net.load_state_dict(self.state["weights"])
                wopt.load_state_dict(self.state["optimizer"])
                if sched is not None:
                    sched.load_state_dict(self.state["scheduler"])
                torch.set_rng_state(self.state["torch_rng"])
            if sched is None:
                from nasir.strategies.oneshot.enas import sgdr_lr

                for g in wopt.param_groups:
                    g["lr"] = sgdr_lr(epoch, cfg.w_lr, cfg.w_lr_min, cfg.lr_t0, cfg.lr_t_mul)
            lr = float(wopt.param_groups[0]["lr"])
            data.train_w.order_generator.manual_seed(s.seed * 100_003 + epoch)
            rng = np.random.default_rng([s.seed, epoch])
            losses = s._train_weights(net, self.ctrl, self.labels, data, wopt, sched, rng)
        self.record = {"epoch": epoch, "loss": float(np.mean(losses)), "w_lr": lr}
        self.state = {
            "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": wopt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "torch_rng": torch.get_rng_state(), "record": dict(self.record)}
        return dict(self.record)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer (and scheduler) state, torch's RNG state, the last record."""
        return {**self.state, "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the epochs ``state`` holds."""
        super().load_state_dict(state)
        self.state = dict(state)
        self.record = dict(state.get("record") or {})

    def result(self) -> dict[str, Any]:
        """The last epoch's record: ``epoch``, mean ``loss`` and ``w_lr``."""
        return dict(self.record)
