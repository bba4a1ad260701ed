"""Data-parallel supernet training across processes (``torch.distributed``).

A training loop written against a :class:`Replica` runs the same in one process and in N:
every rank iterates the *same* global batches in the same order (same seed, same loader)
and takes its contiguous shard of each (:meth:`Replica.shard`); its loss is its share of
the global batch mean (:meth:`Replica.mean_loss`); after each backward the gradients are
summed over the ranks and divided by N (:meth:`Replica.average_gradients`, or
:meth:`Replica.average` for the lists ``torch.autograd.grad`` returns); BatchNorm layers
normalise with the statistics of the whole global batch (:func:`sync_batchnorm`). Weight
steps and architecture steps alike: the result is one process's with the same global
batch, within float rounding (``tests/test_distributed.py``).

**Why a manual all-reduce and not DDP.** One-shot searches take architecture gradients
with ``torch.autograd.grad`` (:func:`~nasir.strategies.oneshot.common.set_arch_grads`,
DARTS' unrolled second order), which DDP's gradient hooks never see; they toggle
``requires_grad`` of the logits between steps (``frozen_logits``), which DDP fixes at
construction; and one-path modes leave most candidates unused in a step. One flat
all-reduce per step (with a mask, so a gradient that is ``None`` on every rank stays
``None`` and the optimizer skips it as one process would) covers every case; DDP's
overlap of communication with backward buys little for supernets of this size.

**Why not ``nn.SyncBatchNorm``.** In torch 2.13 it refuses CPU tensors ("SyncBatchNorm
expected input tensor to be on GPU"), so gloo cannot use it. :func:`sync_batchnorm`
switches each BatchNorm to a cross-rank forward: one differentiable all-reduce of the
per-channel sums, sums of squares (shifted by the running mean) and the count, so the
backward carries the other ranks' terms of the batch statistics as one process's does;
the running statistics are updated with the global mean and unbiased variance. The
layer keeps its class (a subclass is swapped in), parameters, buffers and state-dict
keys, so optimizers and checkpoints are untouched.

Randomness must be rank-independent: each rank seeds torch the same, so Gumbel noise and
sampled paths (one draw per forward) agree; per-*sample* noise (dropout, drop-path) would
be drawn for a shard, not the global batch, and differ from one process.

Launching: :mod:`nasir.backends.torch.launch` (local processes) and
:mod:`nasir.backends.torch.launch_ray` (one Ray actor per rank).

>>> r = Replica()  # one process: every helper is the identity
>>> x = torch.arange(5.0)
>>> r.shard(x)[0].tolist(), Replica(rank=1, world_size=2).shard(x)[0].tolist()
([0.0, 1.0, 2.0, 3.0, 4.0], [3.0, 4.0])
>>> shard_bounds(5, 2), shard_bounds(1, 2)
([(0, 3), (3, 5)], [(0, 1), (1, 1)])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from nasir.errors import BackendError

__all__ = ["Replica", "shard_bounds", "sync_batchnorm", "unsync_batchnorm"]


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each rank's share of ``n`` items: contiguous, the first ``n % world``
    ranks one item more (a rank may get none when ``n < world``)."""
    q, r = divmod(int(n), int(world_size))
    out, lo = [], 0
    for k in range(world_size):
        hi = lo + q + (1 if k < r else 0)
        out.append((lo, hi))
        lo = hi
    return out


@dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel run (one process: ``Replica()``).

    Attributes:
        rank: this process's rank (0 reports and checkpoints).
        world_size: processes in the run.
        device: where this rank's model and batches live.
        group: the process group (``None``: the default one).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: Any = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise BackendError(f"rank {self.rank} outside a world of {self.world_size}",
                               where="Replica", hint="0 <= rank < world_size")

    @staticmethod
    def current(device: str | torch.device = "cpu") -> Replica:
        """The replica of the initialised default process group, else a single one."""
        if dist.is_available() and dist.is_initialized():
            return Replica(dist.get_rank(), dist.get_world_size(), torch.device(device))
        return Replica(device=torch.device(device))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that reports and writes checkpoints)."""
        return self.rank == 0

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's rows of each tensor of a global batch (same first dimension)."""
        if self.world_size == 1:
            return tensors
        lo, hi = shard_bounds(len(tensors[0]), self.world_size)[self.rank]
        return tuple(t[lo:hi] for t in tensors)

    def mean_loss(self, loss_sum: torch.Tensor, global_n: int) -> torch.Tensor:
        """The loss this rank backpropagates: its per-sample losses' sum (``reduction=
        "sum"``) times ``world / global_n``. Averaged over the ranks by
        :meth:`average_gradients`, its gradient is the global batch mean's, however
        unevenly the batch split (an empty shard contributes zero)."""
        return loss_sum * (self.world_size / max(1, int(global_n)))

    def _group_ready(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise BackendError(f"rank {self.rank} of {self.world_size} has no process group",
                               where="Replica",
                               hint="start the ranks with nasir.backends.torch.launch.launch")

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        self._group_ready()
        dist.all_reduce(t, group=self.group)
        return t

    def average(self, tensors: Sequence[torch.Tensor | None],
                like: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor | None]:
        """The ranks' mean of each tensor, e.g. of what ``torch.autograd.grad`` returned.

        ``None`` stays ``None`` where it is ``None`` on every rank; elsewhere a rank's
        ``None`` counts as zeros shaped like ``like[k]`` (the parameters). Two all-reduces:
        which entries exist, then the values in one flat tensor.
        """
        if self.world_size == 1:
            return list(tensors)
        ref = next((t for t in tensors if t is not None), None)
        if ref is None and like:
            ref = like[0]
        dev = ref.device if ref is not None else self.device
        flags = torch.tensor([t is not None for t in tensors], dtype=torch.float32, device=dev)
        some = [bool(v) for v in self._all_reduce(flags) > 0]
        filled: list[torch.Tensor | None] = []
        for k, (t, s) in enumerate(zip(tensors, some)):
            if t is None and s:
                if like is None:
                    raise BackendError(f"tensor {k} is None on rank {self.rank} but not on "
                                       "every rank", where="Replica.average",
                                       hint="pass like= (the parameters) to fill in zeros")
                t = torch.zeros_like(like[k])
            filled.append(t)
        got = [t for t in filled if t is not None]
        if not got:
            return filled
        flat = self._all_reduce(torch.cat([t.reshape(-1) for t in got])) / self.world_size
        out: list[torch.Tensor | None] = []
        offset = 0
        for t in filled:
            if t is None:
                out.append(None)
                continue
            out.append(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        return out

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace each parameter's ``.grad`` by the ranks' mean (call after backward,
        before clipping and the optimizer step); a gradient no rank has stays ``None``."""
        ps = list(params)
        if self.world_size == 1:
            return
        for p, g in zip(ps, self.average([p.grad for p in ps], like=ps)):
            p.grad = g

    def mean(self, value: torch.Tensor | float) -> float:
        """The ranks' mean of a number (a :meth:`mean_loss` value → the global loss)."""
        t = torch.as_tensor(value, dtype=torch.float64).detach().reshape(1).clone()
        if self.world_size == 1:
            return float(t)
        return float(self._all_reduce(t.to(self.device)).cpu() / self.world_size)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (a common start)."""
        if self.world_size == 1:
            return
        self._group_ready()
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, 0, group=self.group)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            self._group_ready()
            dist.barrier(group=self.group)


# -- cross-rank BatchNorm --------------------------------------------------------------

if TYPE_CHECKING:
    _NormBase = nn.modules.batchnorm._BatchNorm  # what the mixin is mixed into
else:
    _NormBase = object


class _CrossRankNorm(_NormBase):
    """Mixed in front of a BatchNorm class by :func:`sync_batchnorm` (module docstring)."""

    _nasir_group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self
        if not (bn.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(bn._nasir_group) > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        # one all-reduce of (Σ(x−s), Σ(x−s)², count); the shift s (the running mean, equal
        # on every rank) keeps E[d²] − E[d]² from cancelling when the mean is large
        shift = (bn.running_mean.detach().view(shape) if bn.running_mean is not None
                 else torch.zeros((), dtype=x.dtype, device=x.device))
        d = x - shift
        count = torch.full((1,), float(x.numel() // max(1, c)), dtype=x.dtype, device=x.device)
        packed = _AllReduceSum.apply(torch.cat([d.sum(dims), (d * d).sum(dims), count]),
                                     bn._nasir_group)
        n = packed[-1].detach()
        dmean = packed[:c] / n
        var = (packed[c:2 * c] / n - dmean * dmean).clamp(min=0)
        mean = dmean + shift.reshape(-1) if bn.running_mean is not None else dmean
        dev = d - dmean.view(shape)
        y = dev * torch.rsqrt(var + bn.eps).view(shape)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        if (bn.track_running_stats and bn.running_mean is not None
                and bn.running_var is not None):  # torch keeps both or neither
            with torch.no_grad():
                factor = bn.momentum
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.add_(1)
                    if factor is None:
                        factor = 1.0 / float(bn.num_batches_tracked)
                factor = 0.0 if factor is None else float(factor)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return y


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks (its backward sums the gradients over the ranks),
    as ``torch.distributed.nn.functional.all_reduce``, which torch 2.13 deprecates."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, group: Any = None) -> torch.Tensor:
        ctx.group = group
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


_SYNCED: dict[type, type] = {}


def _synced(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"CrossRank{cls.__name__}", (_CrossRankNorm, cls),
                            {"__module__": __name__, "__doc__": cls.__doc__})
    return _SYNCED[cls]


def sync_batchnorm(module: nn.Module, group: Any = None) -> int:
    """Make every BatchNorm in ``module`` normalise with the statistics of all ranks
    (training mode; eval mode uses the running statistics, the same on every rank).
    Returns how many layers it switched; outside a multi-process group they behave as
    before. Undone by :func:`unsync_batchnorm`.

    The switch swaps in a subclass of each layer's own class: a new module would need its
    parameters re-pointed in every optimizer, and would lose what the old class changes
    (lowering's BatchNorm without a batch counter, frozen ``affine=False`` parameters).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    >>> sync_batchnorm(net), type(net[1]).__name__, isinstance(net[1], nn.BatchNorm2d)
    (1, 'CrossRankBatchNorm2d', True)
    >>> unsync_batchnorm(net), type(net[1]).__name__
    (1, 'BatchNorm2d')
    """
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, _CrossRankNorm):
            if isinstance(m, nn.SyncBatchNorm):
                continue
            m.__class__ = _synced(type(m))
            m._nasir_group = group
            n += 1
    return n


def unsync_batchnorm(module: nn.Module) -> int:
    """Undo :func:`sync_batchnorm`; returns how many layers it switched back."""
    n = 0
    for m in module.modules():
        if isinstance(m, _CrossRankNorm):
            m.__class__ = type(m).__mro__[2]
            n += 1
    return n
