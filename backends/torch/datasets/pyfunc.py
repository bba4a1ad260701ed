"""Data from the user's own code: ``module:function`` or ``path/to/file.py:function``.

The function is called with the ``kwargs`` option and may return:

- a :class:`~nasir.backends.torch.data.DataSplits` (used as it is);
- ``(train, val)`` or ``(train, val, test)`` map-style datasets of ``(x, y)`` pairs;
- one map-style dataset: ``val_fraction`` of it is held out (stratified, seeded).

Items are made tensors as the estimator needs them: ``x`` a tensor, array or PIL image
(uint8 scaled to [0, 1], H×W gets a channel, PIL's H×W×C becomes C×H×W), ``y`` an int64.
The input shape is the first training item's; the number of classes is the training
dataset's ``num_classes`` attribute, else ``len(classes)``, else the largest label in
``targets`` (or, lacking that, in every training and validation item) plus one.

>>> from torch.utils.data import TensorDataset
>>> import torch
>>> ds = TensorDataset(torch.zeros(10, 4, 4, dtype=torch.uint8), torch.arange(10) % 2)
>>> s = as_splits(ds, "demo:data", ModuleOptions(val_fraction=0.2), seed=0)
>>> s.input_shape, s.num_classes, len(s.train), len(s.val)
((1, 4, 4), 2, 8, 2)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from nasir.backends.torch.data import DataSplits
from nasir.backends.torch.datasets.local import resolve
from nasir.backends.torch.datasets.options import DataError, ModuleOptions
from nasir.backends.torch.datasets.tensors import holdout, make_augment
from nasir.errors import NasirError

__all__ = ["as_splits", "load_callable", "resolve_callable"]

_FORMS = ("expected a DataSplits, (train, val) or (train, val, test) map-style datasets "
          "of (x, y) pairs, or one such dataset")


def resolve_callable(target: str, base_dir: str | None) -> Callable[..., Any]:
    """The function ``target`` names; files and modules are looked up from ``base_dir``
    (else the working folder)."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        path = resolve(where, base_dir)
        if not path.is_file():
            raise DataError(f"data module file not found: {path}")
        tag = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        spec = importlib.util.spec_from_file_location(f"_nasir_data_{path.stem}_{tag}", path)
        if spec is None or spec.loader is None:
            raise DataError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(spec.name, None)
            raise DataError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        folder = str(resolve(".", base_dir))
        added = folder not in sys.path
        if added:
            sys.path.insert(0, folder)
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise DataError(f"cannot import data module {where!r}: {e}") from e
        finally:
            if added:
                sys.path.remove(folder)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise DataError(f"{where} has no function {name!r}")
    return fn


def _tensor(x: Any) -> torch.Tensor:
    if hasattr(x, "getbands"):  # a PIL image: H×W or H×W×C
        a = np.asarray(x)
        x = a.transpose(2, 0, 1) if a.ndim == 3 else a
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(torch.float32) / 255.0 if t.dtype == torch.uint8 else t.to(torch.float32)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise DataError(f"a data item has shape {tuple(t.shape)}; expected C×H×W or H×W")
    return t


class Pairs(Dataset):
    """``(x, y)`` items of another map-style dataset as a float32 ``C×H×W`` tensor and an
    int64 label (see the module docstring)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.data[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"data item {i} is a {type(item).__name__}, not an (x, y) pair")
        return _tensor(item[0]), torch.as_tensor(int(item[1]), dtype=torch.int64)


def _labels(ds: Any) -> np.ndarray:
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return np.asarray(torch.as_tensor(targets)).astype(np.int64).reshape(-1)
    return np.array([int(ds[i][1]) for i in range(len(ds))], np.int64)


def _num_classes(train: Any, others: list[Any]) -> int:
    n = getattr(train, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    classes = getattr(train, "classes", None)
    if classes is not None and len(classes):
        return len(classes)
    top = max(int(_labels(d).max(initial=0)) for d in [train, *others])
    return top + 1


def _map_style(d: Any) -> bool:
    return hasattr(d, "__getitem__") and hasattr(d, "__len__") and not isinstance(d, str)


def as_splits(out: Any, target: str, opts: ModuleOptions, *, seed: int) -> DataSplits:
    """:class:`DataSplits` of what a data function returned (see the module docstring)."""
    if isinstance(out, DataSplits):
        name = out.name or target
        if opts.augment is not None or opts.cutout:
            return dataclasses.replace(out, name=name,
                                       augment=make_augment(opts, out.input_shape))
        return dataclasses.replace(out, name=name)
    if _map_style(out) and not isinstance(out, (tuple, list)):
        labels = _labels(out)
        tr, va = holdout(labels, opts.val_fraction, seed)
        parts = [Subset(out, tr.tolist()), Subset(out, va.tolist())]
        num_classes = _num_classes(out, [])
    elif (isinstance(out, (tuple, list)) and len(out) in (2, 3)
          and all(d is None or _map_style(d) for d in out) and out[0] is not None
          and out[1] is not None):
        parts = list(out)
        num_classes = _num_classes(out[0], [out[1]])
    else:
        raise DataError(f"data function {target} returned {type(out).__name__}; {_FORMS}")
    if len(parts[0]) == 0 or len(parts[1]) == 0:
        raise DataError(f"data function {target} returned an empty training or validation "
                        f"set")
    train, val = Pairs(parts[0]), Pairs(parts[1])
    test = Pairs(parts[2]) if len(parts) == 3 and parts[2] is not None else None
    shape = tuple(int(s) for s in train[0][0].shape)
    return DataSplits(train, val, test, num_classes, shape,
                      augment=make_augment(opts, shape), name=target)


def load_callable(target: str, opts: ModuleOptions, *, base_dir: str | None,
                  seed: int) -> DataSplits:
    """Call the data function ``target`` names with ``opts.kwargs``; its result as
    :class:`DataSplits`."""
    fn = resolve_callable(target, base_dir)
    try:
        out = fn(**opts.kwargs)
    except NasirError:
        raise
    except Exception as e:
        raise DataError(f"data function {target} failed: {type(e).__name__}: {e}") from e
    return as_splits(out, target, opts, seed=seed)
