"""What a training run needs besides its loop: the DARTS-style auxiliary head spliced onto
a lowered network (``_attach_aux``), where and in which precision steps run
(``_Precision``, :func:`device_bytes`), and how a failed trial is named (``_Diverged``,
``_Timeout``, ``_check_finite``, ``_failure_reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasir.backends.torch.memory import MemoryEstimate
from nasir.errors import BackendError, NasirError
from nasir.graph import Graph

__all__ = ["device_bytes"]

class _Diverged(Exception):
    pass


class _Timeout(Exception):
    pass


class _AuxHead(nn.Module):
    """DARTS-style auxiliary classifier on an intermediate feature map."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Conv2d(channels, 128, 1, bias=False),
                                      nn.BatchNorm2d(128), nn.ReLU())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _WithAux(nn.Module):
    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.aux = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, feat = self.net(x)
        return out, self.aux(feat)


def _attach_aux(module: Any, g: Graph, num_classes: int) -> nn.Module:
    """Expose the feature map about two thirds into the network as a second output."""
    from nasir.backends.torch.lowering import _fx_name, prepare

    e = prepare(g)
    nodes = e.nodes()
    by_name = {n.name: n for n in module.graph.nodes}
    cands = [n for n in nodes[: max(1, 2 * len(nodes) // 3)]
             if n.type is not None and n.type.rank == 3 and _fx_name(n) in by_name]
    if not cands:
        raise BackendError("no feature map for an auxiliary head",
                           hint="set aux_weight=0 for networks without conv layers")
    feat = cands[-1]
    out = next(n for n in module.graph.nodes if n.op == "output")
    out.args = ((out.args[0], by_name[_fx_name(feat)]),)
    module.recompile()
    return _WithAux(module, _AuxHead(feat.shape[0], num_classes))


@dataclass(frozen=True)
class _Precision:
    """Where a run's steps execute: device, autocast dtype (None: fp32), fp16 scaler."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: Any = None


def device_bytes(mem: MemoryEstimate, dtype: torch.dtype | None) -> int:
    """Predicted device bytes of a training step under autocast ``dtype``: the fp32
    prediction with activations held in 16 bits, plus autocast's 16-bit copies of the
    weights (None: the fp32 prediction)."""
    if dtype is None:
        return mem.total
    return (mem.weights + mem.gradients + mem.optimizer + mem.activations // 2
            + mem.transient + mem.weights // 2)


def _failure_reason(e: BaseException) -> str:
    """The ``reason`` of a trial that stopped with ``e``."""
    if isinstance(e, _Diverged):
        return f"diverged: {e}"
    if isinstance(e, _Timeout):
        return f"timeout: {e}"
    if isinstance(e, torch.OutOfMemoryError | MemoryError):
        return f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if isinstance(e, NasirError):
        return f"invalid candidate: {e.message}"
    if isinstance(e, RuntimeError):
        msg = str(e)
        if "memory" in msg.lower() and ("alloc" in msg.lower() or "out of" in msg.lower()):
            return f"out of memory: {msg.splitlines()[0]}"
        return f"runtime error: {msg.splitlines()[0] if msg else type(e)}"
    return f"{type(e).__name__}: {e}"


def _check_finite(total: torch.Tensor) -> None:
    value = float(total)
    if not math.isfinite(value):
        raise _Diverged(f"training loss became {value}")
