"""Import torchvision's models next to a CPU-only torch (tests and benchmarks).

The registry's ``torchvision`` wheels link the CUDA build of torch, so beside the CPU torch
that ``make venv`` installs their C ops (``torchvision._C``) do not load, and ``import
torchvision`` stops where it registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms``, two ops that the missing library would have declared. Declaring
those two schemas with :mod:`torch.library` lets the rest of torchvision, the pure-Python
models included, import and run. Nothing is declared when the C ops load (a CUDA torch, a
source build), and the detection ops that need them still raise torchvision's own error.

torchvision is a dev dependency (``pip install -e '.[dev]'``), used by the parity tests and
the training-speed benchmark; nasir itself never imports it.

>>> tv = import_torchvision()
>>> sum(p.numel() for p in tv.models.mobilenet_v2().parameters())
3504872
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

__all__ = ["import_torchvision"]

_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _declared(qualname: str) -> bool:
    namespace, name = qualname.split("::")
    return hasattr(getattr(torch.ops, namespace), name)


def import_torchvision() -> ModuleType:
    """``import torchvision``, declaring the two op schemas its fake kernels need when its
    C ops could not be loaded. Raises :class:`ImportError` when it is not installed."""
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        # a half-finished import leaves its submodules behind; start the import afresh
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        for qualname, schema in _SCHEMAS.items():
            if not _declared(qualname):
                torch.library.define(qualname, schema)
        import torchvision
    return torchvision
