"""Training-memory prediction from the IR's typed shapes, a budget check, and measurement.

**Model.** Peak memory of one training step (forward, backward, optimizer update) is
predicted as

* weights and buffers, optimizer state (SGD 0, momentum 1, Adam 2 copies of the
  weights), and the weight gradients computed so far (backward is simulated node by node in
  reverse order: saved activations are freed as gradients appear);
* the activations autograd saves for backward, per sample times the batch: the input of
  conv / linear / batch-norm / pooling / relu6 / hardswish / swish / hardsigmoid, the output
  of relu and sigmoid, both operands of ``mul``, dropout's byte mask and max-pool's int64
  indices. A value saved by several consumers counts once, and views (``flatten``,
  ``crop``, ``identity``) count as the tensor they view. Values whose only way to the output
  goes through ``zero`` are not saved (no gradient flows there);
* a transient: while backward runs, the gradient of the largest activation and the one it
  is computed from are alive together (two largest activations, per sample times batch).

**Measurement** (:func:`measure_training_step`): the PyTorch profiler records every
allocation and free of the CPU allocator with its size; the running sum of those events
over one step gives the step's peak above what was resident before it, to which the
resident weights are added. It counts tensor bytes handed out by the allocator (what the
model predicts), not the process RSS, which allocator caching and fragmentation blur.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
>>> est = predict_training_memory(sp.instantiate(sp.reference("resnet")), batch_size=8)
>>> est.total == est.weights + est.gradients + est.optimizer + est.activations + est.transient
True
>>> try:
...     check_memory(est, budget_bytes=1000)
... except ResourceError as e:
...     print(e.message[:40])
predicted training memory 145,600 B of t
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nasir.errors import BackendError
from nasir.graph import Graph, Node

__all__ = [
    "MemoryEstimate",
    "ResourceError",
    "activation_profile",
    "check_memory",
    "measure_training_step",
    "predict_training_memory",
]

_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i64": 8}
_OPT_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}
_SAVES_INPUT = ("conv2d", "depthwise_conv2d", "linear", "batch_norm", "max_pool2d",
                "avg_pool2d", "relu6", "hardswish", "swish", "hardsigmoid")
_SAVES_OUTPUT = ("relu", "sigmoid")
_VIEWS = ("identity", "flatten", "crop")


class ResourceError(BackendError):
    """A network will not fit the given resources (memory budget)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes of one training step, by component."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        """Sum of all components."""
        return self.weights + self.gradients + self.optimizer + self.activations + \
            self.transient

    def __str__(self) -> str:
        mib = 1 << 20
        return (f"{self.total / mib:.1f} MiB (weights {self.weights / mib:.1f}, grads "
                f"{self.gradients / mib:.1f}, optimizer {self.optimizer / mib:.1f}, "
                f"activations {self.activations / mib:.1f}, transient "
                f"{self.transient / mib:.1f})")


def _nbytes(n: Node) -> int:
    t: Any = n.type
    return int(t.numel * _BYTES.get(t.dtype, 4))


def _grad_live(g: Graph) -> set[Node]:
    """Nodes on a differentiable path to the output (``zero`` cuts the path)."""
    live = {g.output}
    for n in reversed(g.nodes()):
        if n in live and n.op.name != "zero":
            live.update(n.inputs)
    return live


def activation_profile(g: Graph) -> tuple[list[int], list[int], int]:
    """Per node of an expanded, typed graph (graph order): bytes per sample of the values
    first saved for backward by that node, and bytes of its weights; plus the two largest
    activations per sample, summed (the transient)."""
    live = _grad_live(g)
    base: dict[Node, Node] = {}
    for n in g.nodes():
        base[n] = base[n.inputs[0]] if n.op.name in _VIEWS else n
    seen: set[Node] = set()
    saved: list[int] = []
    weights: list[int] = []
    sizes = [0, 0]
    for n in g.nodes():
        name = n.op.name
        ins = tuple(i.type for i in n.inputs)
        weights.append(4 * n.op.params(ins, n.type))  # type: ignore[arg-type]
        if name not in _VIEWS and name != "input":
            sizes.append(_nbytes(n))
        if n not in live:
            saved.append(0)
            continue
        new: list[Node] = []
        if name in _SAVES_INPUT:
            new.append(base[n.inputs[0]])
        elif name in _SAVES_OUTPUT:
            new.append(base[n])
        elif name == "mul":
            new.extend(base[i] for i in n.inputs)
        extra = 0
        if name == "dropout" and getattr(n.op, "p", 0) > 0:
            extra += n.type.numel  # type: ignore[union-attr]
        if name == "max_pool2d":
            extra += 8 * n.type.numel  # type: ignore[union-attr]
        fresh = [v for v in dict.fromkeys(new) if v not in seen]
        seen.update(fresh)
        saved.append(sum(_nbytes(v) for v in fresh) + extra)
    sizes.sort(reverse=True)
    return saved, weights, sizes[0] + sizes[1]


def predict_training_memory(graph: Graph, batch_size: int, optimizer: str = "sgd",
                            *, trainable_fraction: float = 1.0) -> MemoryEstimate:
    """Predict the peak memory of one training step of ``graph`` at ``batch_size``.

    Backward is simulated in reverse graph order: before node k's backward, the saved
    activations of nodes up to k are alive together with the weight gradients of nodes
    from k on; the peak over k (and over the forward's end and the optimizer update) is
    the prediction. ``optimizer`` is ``sgd``, ``momentum`` or ``adam``.
    ``trainable_fraction`` scales the gradient and optimizer terms.
    """
    from nasir.backends.torch.lowering import prepare

    if optimizer not in _OPT_COPIES:
        raise BackendError(f"unknown optimizer {optimizer!r} for memory prediction",
                           hint=f"use one of {', '.join(_OPT_COPIES)}")
    if batch_size < 1:
        raise BackendError(f"batch size must be >= 1, got {batch_size}")
    g = prepare(graph)
    buffers = sum(2 * 4 * n.type.shape[0] for n in g.nodes()  # type: ignore[union-attr]
                  if n.op.name == "batch_norm")
    saved, weights, transient = activation_profile(g)
    frac = trainable_fraction
    total_w = sum(weights)
    acc = list(itertools.accumulate(saved))
    grads_from = list(itertools.accumulate(reversed(weights)))[::-1]
    best = (batch_size * acc[-1], 0)
    for k in range(len(saved)):
        cand = (batch_size * acc[k], int(frac * grads_from[k]))
        if sum(cand) > sum(best):
            best = cand
    if int(frac * total_w) > sum(best):
        best = (0, int(frac * total_w))
    return MemoryEstimate(
        weights=total_w + buffers,
        gradients=best[1],
        optimizer=_OPT_COPIES[optimizer] * int(frac * total_w),
        activations=best[0],
        transient=batch_size * transient,
    )


def check_memory(estimate: MemoryEstimate, budget_bytes: int, what: str = "network") -> None:
    """Raise ``ResourceError`` when ``estimate`` does not fit ``budget_bytes``."""
    if estimate.total > budget_bytes:
        raise ResourceError(
            f"predicted training memory {estimate.total:,} B of this {what} exceeds the "
            f"budget of {budget_bytes:,} B",
            where=str(estimate),
            hint="lower the batch size, the resolution or the width, or use a binarized / "
                 "single-path supernet mode instead of DARTS",
        )


@dataclass(frozen=True)
class StepMeasurement:
    """Measured bytes: ``resident`` before the step, ``peak`` during it, and seconds."""

    resident: int
    step_peak: int
    seconds: float

    @property
    def total(self) -> int:
        """Resident plus the step's peak of new allocations."""
        return self.resident + self.step_peak


def _alloc_peak(prof: Any) -> int:
    from torch._C._profiler import _EventType

    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        n = stack.pop()
        if n.tag == _EventType.Allocation:
            events.append((n.start_time_ns, n.extra_fields.alloc_size))
        stack.extend(n.children)
    events.sort()
    cur = peak = 0
    for _, b in events:
        cur += b
        peak = max(peak, cur)
    return peak


def measure_training_step(module: torch.nn.Module, step: Callable[[], Any]) -> StepMeasurement:
    """Run ``step()`` (forward, backward, update) under the profiler's memory recording.

    ``resident`` is the bytes of ``module``'s parameters and buffers (already allocated).
    Set gradients to ``None`` before calling: the profiler does not see frees of blocks
    allocated before it started, so freeing old gradients inside ``step`` would be missed.
    """
    from torch.profiler import ProfilerActivity, profile

    resident = sum(t.numel() * t.element_size() for t in module.parameters())
    resident += sum(t.numel() * t.element_size() for t in module.buffers())
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return StepMeasurement(resident, _alloc_peak(prof), time.perf_counter() - t0)
