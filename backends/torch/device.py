"""Where and how a trial trains: device, mixed precision, memory format, determinism.

One setting names the device — ``auto`` (CUDA when PyTorch sees a GPU, else Apple's MPS,
else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` — and :func:`resolve_device` turns
it into a ``torch.device``, refusing with a :class:`~nasir.errors.BackendError` a device this
machine does not have (before any training starts, not as a CUDA stack trace later).
A pool worker may be handed its own device through the environment variable
``NASIR_WORKER_DEVICE``; :func:`worker_device` is the one place that reads it.

Mixed precision (``amp``): ``auto`` is bf16 autocast on a CUDA GPU that supports bf16, fp16
(with a gradient scaler) on one that does not, and off on the CPU and MPS; ``bf16``,
``fp16`` and ``off`` ask for one explicitly (the CPU runs bf16 and fp16 autocast too).

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_amp("auto", torch.device("cpu")) is None, amp_name(torch.bfloat16)
(True, 'bf16')
>>> check_device_spec("gpu")
Traceback (most recent call last):
  ...
nasir.errors.BackendError: unknown device 'gpu'
  fix:   use auto, cpu, cuda, cuda:N or mps
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from nasir.errors import BackendError

__all__ = [
    "AMP_MODES",
    "DEVICE_PATTERN",
    "WORKER_DEVICE_ENV",
    "amp_name",
    "autocast",
    "check_amp",
    "check_device_spec",
    "default_loader_workers",
    "determinism",
    "free_memory",
    "grad_scaler",
    "prepare_module",
    "release_memory",
    "resolve_amp",
    "resolve_device",
    "to_memory_format",
    "worker_device",
]

#: the device settings nasir accepts (the experiment's ``device``, ``TrainConfig.device``)
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+|mps)$"
#: mixed-precision settings: ``auto``, ``bf16``, ``fp16``, ``off``
AMP_MODES = ("auto", "bf16", "fp16", "off")
#: the environment variable a worker process's own device comes from (set by executors)
WORKER_DEVICE_ENV = "NASIR_WORKER_DEVICE"

_HINT = "use auto, cpu, cuda, cuda:N or mps"


def check_device_spec(spec: str | None) -> str:
    """``spec`` if it is a device setting nasir knows (None: ``auto``); checks only the
    form, not whether this machine has the device (that is :func:`resolve_device`)."""
    text = "auto" if spec is None or spec == "" else str(spec)
    if not re.match(DEVICE_PATTERN, text):
        raise BackendError(f"unknown device {text!r}", hint=_HINT)
    return text


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` a setting names on this machine.

    ``auto`` (or ``None``) is CUDA when PyTorch sees a GPU, else MPS when present, else the
    CPU. Asking for CUDA or MPS on a machine without it, or for a GPU index it lacks, is a
    :class:`~nasir.errors.BackendError` that says what this torch build sees.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = check_device_spec(spec)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendError(
                f"device {text!r} was asked for but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__})",
                hint="use --device cpu or auto, or install a CUDA build of torch")
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"device {text!r} was asked for but PyTorch sees "
                               f"{torch.cuda.device_count()} GPU(s)",
                               hint="GPUs are numbered from 0 (CUDA_VISIBLE_DEVICES renumbers "
                                    "them)")
        return dev
    if text == "mps" and not _mps_available():
        raise BackendError("device 'mps' was asked for but PyTorch sees no MPS device",
                           hint="use --device cpu or auto")
    return torch.device(text)


def worker_device(default: str | None = "auto") -> str:
    """The device setting of this process: ``$NASIR_WORKER_DEVICE`` when a pool worker was
    given one, else ``default`` (the experiment's)."""
    own = os.environ.get(WORKER_DEVICE_ENV, "").strip()
    return check_device_spec(own or default)


def check_amp(amp: str) -> str:
    """``amp`` if it is a mixed-precision setting (``auto|bf16|fp16|off``)."""
    if amp not in AMP_MODES:
        raise BackendError(f"unknown mixed-precision setting amp={amp!r}",
                           hint=f"use one of {', '.join(AMP_MODES)}")
    return amp


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a setting on ``device`` (``None``: full fp32).

    ``auto``: bf16 on a CUDA GPU that supports it, else fp16 there; off on CPU and MPS."""
    check_amp(amp)
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BackendError("this GPU does not support bf16", hint="use amp='fp16' or 'auto'")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def amp_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``off``: what a run reports as its precision."""
    if dtype is None:
        return "off"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype`` (a no-op context when ``dtype`` is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> Any:
    """A ``torch.amp.GradScaler`` for fp16 training (None otherwise: bf16 has fp32's range
    and needs none)."""
    if dtype != torch.float16 or device.type not in ("cuda", "cpu"):
        return None
    return torch.amp.GradScaler(device.type)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d batch in channels-last layout when asked (other tensors unchanged)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def prepare_module(model: nn.Module, device: torch.device, *, channels_last: bool = False
                   ) -> nn.Module:
    """``model`` moved to ``device`` (in place), its 4-d weights channels-last when asked."""
    model.to(device)
    if channels_last:
        # Module.to takes memory_format (its docstring's fourth form); torch's overloads
        # leave that form out
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can still take on ``device``: the GPU's free memory plus what
    this process's caching allocator holds unused; ``None`` where unknown (CPU, MPS)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(0, cached))


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand the CUDA caching allocator's free blocks back (after a
    trial ran out of memory, so the next one starts from a clean device)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def default_loader_workers(device: torch.device) -> int:
    """DataLoader worker processes for data that cannot be held on the device: none on the
    CPU (the trial's threads use the cores) or inside a daemonic pool worker (which may not
    start children), else up to 4."""
    if device.type == "cpu" or multiprocessing.current_process().daemon:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@contextlib.contextmanager
def determinism(on: bool, device: torch.device) -> Iterator[None]:
    """Within: deterministic kernels when ``on`` (``torch.use_deterministic_algorithms``,
    warn-only for ops that have none; cuDNN's deterministic algorithms and no autotuning;
    on CUDA ``CUBLAS_WORKSPACE_CONFIG`` is set if cuBLAS has not started yet). Off, nothing
    changes. The process-wide flags are restored on exit."""
    if not on:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
