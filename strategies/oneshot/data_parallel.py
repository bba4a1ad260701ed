"""A supernet search job trained data-parallel: each epoch runs in N processes.

:class:`DataParallelJob` wraps a :class:`~nasir.strategies.oneshot.supernet_job.SupernetJob`
(DARTS, FBNet, ProxylessNAS) for the runner. The wrapped job lives in the
driver's process and holds the state the runner checkpoints; each step (one epoch) hands
that state to ``workers`` ranks (:func:`~nasir.backends.torch.launch.launch`, or
:class:`~nasir.backends.torch.launch_ray.RayRankPool` on a Ray cluster), each rank rebuilds the job
with ``rebuild`` (a picklable function: the same searcher, data and seed in every process),
loads the state, and trains the epoch on its shard of every global batch with synchronised
BatchNorm and averaged gradients (:mod:`nasir.backends.torch.distributed`). Rank 0 sends
back the epoch's record and the new state; the wrapper loads it. Checkpoints, resume after
``kill -9`` and the derivation are the wrapped job's, unchanged: the runner cannot tell a
data-parallel epoch from a one-process one, except that the numbers agree only to float
rounding.

The ranks' steps are the wrapped job's with three changes (:func:`replicate`): the batch is
this rank's shard, the loss is its share of the global batch mean
(:meth:`~nasir.backends.torch.distributed.Replica.mean_loss`), and gradients are averaged
after each backward, before clipping and the optimiser step. The architecture losses of
FBNet and ProxylessNAS are linear in the cross-entropy, so the share carries through them;
DARTS' second order averages each gradient of its unrolled step.

The ranks are a :class:`~nasir.backends.torch.launch.RankPool` (local processes) or a
:class:`~nasir.backends.torch.launch_ray.RayRankPool` (Ray actors) kept for the whole job:
they rebuild the job and load the state once (again after the wrapped job is loaded from
a checkpoint), then continue their own copy epoch after epoch; rank 0 still sends the
state back each epoch, for the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nasir.backends.torch.distributed import Replica, sync_batchnorm
from nasir.errors import SpecError
from nasir.strategies.jobs import SearchJob

__all__ = ["DataParallelJob", "replicate", "run_epoch"]


def _loss(replica: Replica, net: Any, x: Any, y: Any) -> torch.Tensor:
    """This rank's share of the global batch's mean cross-entropy."""
    xs, ys = replica.shard(x, y)
    return replica.mean_loss(F.cross_entropy(net(xs), ys, reduction="sum"), len(y))


class _DartsSteps:
    """DARTS' per-batch steps on a rank (:func:`replicate`); second order averages each of
    the unrolled gradient's gradients (``DartsSearch._arch_grad_unrolled(replica=)``)."""

    replica: Replica

    def arch_step(self, xw: Any, yw: Any, xa: Any, ya: Any) -> None:
        from nasir.strategies.oneshot.common import set_arch_grads

        job: Any = self
        aopt = job.optimizers["a"]
        aopt.zero_grad()
        if job.searcher.order == 1:
            set_arch_grads(job.net, _loss(self.replica, job.net, xa, ya))
            self.replica.average_gradients(job.net.arch_parameters())
        else:
            grads = job.searcher._arch_grad_unrolled(job.net, xw, yw, xa, ya,
                                                     job.optimizers["w"], self.replica)
            for p, g in zip(job.net.arch_parameters(), grads):
                p.grad = g
        aopt.step()

    def weight_step(self, xw: Any, yw: Any) -> float:
        from nasir.strategies.oneshot.common import frozen_logits

        job: Any = self
        net, wopt = job.net, job.optimizers["w"]
        wopt.zero_grad()
        with frozen_logits(net):
            loss = _loss(self.replica, net, xw, yw)
            loss.backward()
        self.replica.average_gradients(net.weight_parameters())
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), job.cfg.grad_clip)
        wopt.step()
        return self.replica.mean(loss)


class _LatencySteps:
    """FBNet's and ProxylessNAS' per-batch steps on a rank (:func:`replicate`)."""

    replica: Replica

    def arch_step(self, xa: Any, ya: Any) -> None:
        from nasir.strategies.oneshot.common import set_arch_grads

        job: Any = self
        net, aopt, cfg, s = job.net, job.optimizers["a"], job.cfg, job.searcher
        aopt.zero_grad()
        ce = _loss(self.replica, net, xa, ya)
        exp = job.expected()
        lat = job.sampled() if cfg.latency == "sampled" else exp
        set_arch_grads(net, s.arch_loss(ce, lat) * s.over_target(exp))
        self.replica.average_gradients(net.arch_parameters())
        before = {k: v.detach().clone() for k, v in net.alphas.items()}
        aopt.step()
        s.after_arch_step(net, before)

    def weight_step(self, x: Any, y: Any) -> float:
        from nasir.strategies.oneshot.common import frozen_logits

        job: Any = self
        net, wopt = job.net, job.optimizers["w"]
        wopt.zero_grad()
        freeze = job.searcher.freeze_in_weight_steps
        with frozen_logits(net) if freeze else contextlib.nullcontext():
            loss = _loss(self.replica, net, x, y)
            loss.backward()
        self.replica.average_gradients(net.weight_parameters())
        wopt.step()
        return self.replica.mean(loss)


def _steps_for(job: Any) -> type:
    from nasir.strategies.oneshot.darts_job import DartsJob
    from nasir.strategies.oneshot.latency_job import LatencyJob

    if isinstance(job, DartsJob):
        return _DartsSteps
    if isinstance(job, LatencyJob):
        return _LatencySteps
    raise SpecError(f"{type(job).__name__} cannot train data-parallel",
                    where="strategy option workers",
                    hint="workers > 1 is for the supernet searches: darts (and its "
                         "variants), fbnet, proxylessnas")


_CLASSES: dict[tuple[type, type], type] = {}


def replicate(job: Any, replica: Replica) -> Any:
    """Make ``job`` (a freshly built supernet job in a rank's process) train as
    ``replica``: its class gains the data-parallel per-batch steps, its supernet's
    BatchNorms synchronise across the ranks. Returns the job."""
    steps = _steps_for(job)
    key = (steps, type(job))
    if key not in _CLASSES:
        _CLASSES[key] = type(f"DataParallel{type(job).__name__}", key, {})
    job.__class__ = _CLASSES[key]
    job.replica = replica
    sync_batchnorm(job.net)
    return job


#: in a rank's process: the job it trains, kept between the epochs of a :class:`RankPool`
_RANK_JOB: dict[str, Any] = {}


def run_epoch(replica: Replica, rebuild: Callable[[], Any], state: dict[str, Any] | None
              ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One rank's epoch: with ``state``, rebuild the job and load it (else continue the job
    this process trained last); step; rank 0 returns the record and the new state (the
    other ranks ``None``)."""
    job = _RANK_JOB.get("job")
    if state is not None or job is None:
        job = replicate(rebuild(), replica)
        if state is not None:
            job.load_state_dict(state)
        _RANK_JOB["job"] = job
    record = job.step()
    return (record, job.state_dict()) if replica.is_main else None


class DataParallelJob(SearchJob):
    """``job``'s epochs trained in ``workers`` processes (module docstring).

    Args:
        job: the supernet job (in this process: it holds the state and derives).
        rebuild: a picklable function that builds the same job afresh (every rank calls it).
        workers: processes (ranks); 1 trains in this process as ``job`` would.
        launcher: ``local`` (spawned processes) or ``ray`` (one actor a rank).
        device: ``cpu`` (gloo) or ``cuda`` (NCCL, one GPU a rank).
        timeout_s: one epoch's limit.
    """

    def __init__(self, job: Any, rebuild: Callable[[], Any], workers: int, *,
                 launcher: str = "local", device: str = "cpu", timeout_s: float = 3600.0
                 ) -> None:
        super().__init__()
        if not isinstance(workers, int) or workers < 1:
            raise SpecError(f"workers must be an integer >= 1, got {workers!r}",
                            where="strategy option workers", hint="processes a supernet epoch "
                            "trains in, e.g. 2")
        if launcher not in ("local", "ray"):
            raise SpecError(f"unknown launcher {launcher!r}", hint="'local' or 'ray'")
        if workers > 1:
            _steps_for(job)
        self.inner, self.rebuild, self.workers = job, rebuild, workers
        self.launcher, self.device, self.timeout_s = launcher, device, float(timeout_s)
        self.name = job.name
        self.total_steps = job.total_steps
        self.steps_done = job.steps_done
        self._pool: Any = None
        self._send_state = True

    def _step(self) -> dict[str, Any]:
        if self.workers == 1:
            rec = dict(self.inner.step())
            rec.pop("step", None)
            return rec
        from nasir.backends.torch.launch import RankPool
        from nasir.backends.torch.launch_ray import RayRankPool

        # the ranks keep their job between epochs; they get the state when they start
        # and after the wrapped job was loaded from a checkpoint
        state = self.inner.state_dict() if self._send_state else None
        if self._pool is None or self._pool.closed:
            pool = RayRankPool if self.launcher == "ray" else RankPool
            self._pool = pool(self.workers, device=self.device, timeout_s=self.timeout_s)
            state = self.inner.state_dict()
        outs = self._pool.run(run_epoch, (self.rebuild, state))
        self._send_state = False
        record, new_state = outs[0]
        self.inner.load_state_dict(new_state)
        if self.inner.done:
            self.close()
        record = dict(record)
        record.pop("step", None)
        return {**record, "workers": self.workers}

    def close(self) -> None:
        """Stop the ranks (done after the last epoch; a failed epoch stops them too)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def state_dict(self) -> dict[str, Any]:
        """The wrapped job's state."""
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the wrapped job from ``state``."""
        self.inner.load_state_dict(state)
        self.steps_done = self.inner.steps_done
        self._send_state = True

    def result(self) -> dict[str, Any]:
        """The wrapped job's result (derived in this process)."""
        return self.inner.result()
