"""Which GPU a trial runs on: each pool worker owns one; a Ray trial runs on what Ray grants.

The driver decides in its own process from a GPU *count* (no CUDA context is created
there). Worker ``i`` of a pool gets ``CUDA_VISIBLE_DEVICES`` set to the ``i``-th GPU,
round-robin (``cuda:N`` pins every worker to GPU ``N``), and ``NASIR_WORKER_DEVICE=cuda:0``
— inside the worker its one GPU is device 0 — before anything in it touches CUDA. The
estimators train on ``NASIR_WORKER_DEVICE`` when it is set, else on the run's ``device``.
On the CPU (``cpu``, ``mps``, or ``auto`` / ``cuda`` where no GPU is visible) workers get no
such variables and the default stays two workers.

>>> [e["CUDA_VISIBLE_DEVICES"] for e in assign_gpus(3, "cuda", 2)]
['0', '1', '0']
>>> assign_gpus(2, "cuda:1", 4)[1]
{'CUDA_VISIBLE_DEVICES': '1', 'NASIR_WORKER_DEVICE': 'cuda:0'}
>>> assign_gpus(2, "cpu", 4), default_workers("auto", 4), default_workers("cpu", 4)
([{}, {}], 4, 2)
>>> ray_device([3], "cuda"), ray_device([], "auto"), ray_gpus_per_trial("auto", 0, 8)
('cuda:0', 'cpu', 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from nasir.errors import NasirError

__all__ = ["DEFAULT_WORKERS", "VISIBLE_ENV", "WORKER_DEVICE_ENV", "assign_gpus",
           "default_workers", "gpu_count", "ray_device", "ray_gpus_per_trial", "uses_cuda"]

#: where a worker trains (set by the executor; read by the estimators)
WORKER_DEVICE_ENV = "NASIR_WORKER_DEVICE"
#: the GPUs a process may see (CUDA's own variable)
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
#: pool workers when no GPU is used and ``executor.workers`` is not given
DEFAULT_WORKERS = 2


def gpu_count(device: str) -> int:
    """The CUDA GPUs this process may use for ``device``; ``0`` for ``cpu`` / ``mps``
    without importing torch. ``torch.cuda.device_count`` respects ``CUDA_VISIBLE_DEVICES``
    and creates no CUDA context, so spawned workers may still pick their own GPU."""
    if not (device == "auto" or device.startswith("cuda")):
        return 0
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # a broken driver counts as no GPU; the estimator says why
        return 0


def uses_cuda(device: str, gpus: int) -> bool:
    """Whether trials of a run on ``device`` train on CUDA when ``gpus`` GPUs are visible.

    >>> uses_cuda("auto", 0), uses_cuda("auto", 1), uses_cuda("mps", 1)
    (False, True, False)
    """
    return gpus > 0 and (device == "auto" or device.startswith("cuda"))


def default_workers(device: str, gpus: int) -> int:
    """Pool workers when ``executor.workers`` is not given: one per GPU on CUDA (one for
    ``cuda:N``, the one GPU it names), :data:`DEFAULT_WORKERS` otherwise."""
    if not uses_cuda(device, gpus):
        return DEFAULT_WORKERS
    return 1 if device.startswith("cuda:") else gpus


def _visible_ids(gpus: int, visible: str | None) -> list[str]:
    ids = [t.strip() for t in (visible or "").split(",") if t.strip()]
    return ids[:gpus] if len(ids) >= gpus else [str(i) for i in range(gpus)]


def assign_gpus(workers: int, device: str, gpus: int,
                visible: str | None = None) -> list[dict[str, str]]:
    """The environment each of ``workers`` pool workers starts with, for a run on
    ``device`` with ``gpus`` GPUs visible to the driver (``visible``: the driver's own
    ``CUDA_VISIBLE_DEVICES``, whose ids the workers' are drawn from; default: this
    process's).

    >>> assign_gpus(2, "cuda", 2, visible="4,6")
    [{'CUDA_VISIBLE_DEVICES': '4', 'NASIR_WORKER_DEVICE': 'cuda:0'}, \
{'CUDA_VISIBLE_DEVICES': '6', 'NASIR_WORKER_DEVICE': 'cuda:0'}]
    >>> assign_gpus(1, "cuda:2", 2)
    Traceback (most recent call last):
    ...
    nasir.errors.NasirError: device cuda:2 names GPU 2 but 2 GPU(s) are visible
      where: experiment option device
      fix:   use cuda:0 … cuda:1, or cuda for one worker per GPU
    """
    if not uses_cuda(device, gpus):
        return [{} for _ in range(workers)]
    ids = _visible_ids(gpus, os.environ.get(VISIBLE_ENV) if visible is None else visible)
    if device.startswith("cuda:"):
        n = int(device.split(":", 1)[1])
        if n >= gpus:
            raise NasirError(f"device {device} names GPU {n} but {gpus} GPU(s) are visible",
                             where="experiment option device",
                             hint=f"use cuda:0 … cuda:{gpus - 1}, or cuda for one worker per "
                                  "GPU")
        picks = [ids[n]] * workers
    else:
        picks = [ids[i % gpus] for i in range(workers)]
    return [{VISIBLE_ENV: p, WORKER_DEVICE_ENV: "cuda:0"} for p in picks]


def ray_gpus_per_trial(device: str, gpus_per_trial: float, cluster_gpus: float) -> float:
    """GPUs Ray reserves per trial: ``gpus_per_trial`` when given (> 0); else one when the
    run trains on CUDA (``auto``, ``cuda``, ``cuda:N``) and the cluster has GPUs; else none.

    >>> ray_gpus_per_trial("cuda", 0.5, 8), ray_gpus_per_trial("cuda", 0, 0)
    (0.5, 0.0)
    >>> ray_gpus_per_trial("cpu", 0, 8)
    0.0
    """
    if gpus_per_trial > 0:
        return float(gpus_per_trial)
    return 1.0 if uses_cuda(device, int(cluster_gpus > 0)) else 0.0


def ray_device(gpu_ids: Sequence[Any], device: str) -> str:
    """Where a Ray trial trains, from ``ray.get_gpu_ids()``: ``cuda:0`` when Ray granted
    GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` to them, so the first is device 0; the ``N`` of
    ``cuda:N`` is Ray's to choose), the CPU when it granted none; ``cpu`` and ``mps`` stay.

    >>> ray_device([0, 1], "cuda:3"), ray_device([2], "cpu"), ray_device([], "mps")
    ('cuda:0', 'cpu', 'mps')
    """
    if device in ("cpu", "mps"):
        return device
    return "cuda:0" if len(gpu_ids) > 0 else "cpu"
