"""Data for the training estimator: scikit-learn's digits built in, or any torch data.

The digits set holds 1,797 real 8×8 grey images of handwritten digits (shipped inside
scikit-learn, nothing is downloaded). :func:`digits_splits` splits it with a fixed seed,
stratified by class, into train / validation / test tensors in ``N×1×8×8`` layout scaled
to [0, 1].

>>> s = digits_splits()
>>> s.train.tensors[0].shape[1:], len(s.train) + len(s.val) + len(s.test)
(torch.Size([1, 8, 8]), 1797)
>>> s.num_classes, s.input_shape
(10, (1, 8, 8))
>>> s.describe()
'digits: 1079 train / 359 val / 359 test, 1×8×8, 10 classes'

Other data sets (CIFAR, MNIST, SVHN, npz files, image folders, your own function) are
loaded by :func:`nasir.backends.torch.datasets.load_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from nasir.errors import BackendError

__all__ = ["DataSplits", "digits_splits", "make_loader", "resize_batch", "subset"]


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test datasets with their per-sample input shape.

    ``augment``: None, or ``augment(x, generator) -> x`` that the training estimator
    applies to every *training* batch (``N×C×H×W``, on the batch's device) with a generator
    seeded from the run's seed. ``name`` says what the data is (``digits``, ``cifar10``,
    ``npz:data.npz``); :meth:`describe` adds the sizes.
    """

    train: Any
    val: Any
    test: Any
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    name: str = ""

    def describe(self) -> str:
        """One line: name, split sizes, input shape, classes and augmentation."""
        def size(d: Any) -> str:
            return str(len(d)) if hasattr(d, "__len__") else "?"

        text = (f"{self.name or 'data'}: {size(self.train)} train / {size(self.val)} val"
                + (f" / {size(self.test)} test" if self.test is not None else "")
                + f", {'×'.join(map(str, self.input_shape))}, {self.num_classes} classes")
        if self.augment is not None:
            what = getattr(self.augment, "describe", None)
            text += f", augment: {what() if callable(what) else repr(self.augment)}"
        return text


@lru_cache(maxsize=4)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, d.target.astype(np.int64)


def digits_splits(seed: int = 0, val: float = 0.2, test: float = 0.2) -> DataSplits:
    """scikit-learn's digits split (stratified) with a fixed seed into train / val / test."""
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise BackendError(f"bad split fractions val={val}, test={test}",
                           hint="use fractions in (0, 1) whose sum is below 1")
    x, y = _digits_arrays()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        nv, nt = round(len(idx) * val), round(len(idx) * test)
        parts["val"].append(idx[:nv])
        parts["test"].append(idx[nv:nv + nt])
        parts["train"].append(idx[nv + nt:])

    def ds(k: str) -> TensorDataset:
        idx = np.sort(np.concatenate(parts[k]))
        return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))

    return DataSplits(ds("train"), ds("val"), ds("test"), 10, (1, 8, 8), name="digits")


def subset(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded random ``fraction`` of a map-style dataset (at least one sample)."""
    if fraction >= 1.0:
        return ds
    if not isinstance(ds, Sized):
        raise BackendError(f"cannot take a fraction of {type(ds).__name__}: it has no length",
                           hint="subset needs a map-style dataset (one with __len__); "
                                "use fraction 1.0 for an iterable dataset")
    n = len(ds)
    k = max(1, round(n * fraction))
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return Subset(ds, idx.tolist())


def make_loader(data: Any, batch_size: int, shuffle: bool, seed: int) -> Any:
    """A DataLoader over ``data`` (an existing DataLoader or iterable is used as is)."""
    if isinstance(data, DataLoader) or not hasattr(data, "__getitem__"):
        return data
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


def resize_batch(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinear resize of an ``N×C×H×W`` batch to ``resolution×resolution`` (None: as is)."""
    if resolution is None or (x.shape[-1] == resolution and x.shape[-2] == resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False)
