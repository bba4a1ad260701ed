"""Measured memory of one training step (:func:`measure_training_step`): the PyTorch
profiler's allocation events summed over the step, plus the module's resident bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StepMeasurement", "measure_training_step"]

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
