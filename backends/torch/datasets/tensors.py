"""In-memory image sets: uint8 or float32 tensors normalised per batch, seeded hold-outs.

:class:`ImageTensors` keeps ``N×C×H×W`` images as they were stored (uint8 stays uint8:
CIFAR's 50,000 training images take 150 MB instead of 600 MB as floats) and hands out
float32 items scaled to [0, 1] and normalised with the set's mean / std. Fetching a batch
(``__getitems__``, which ``DataLoader`` uses) converts the whole batch at once, so the same
normalisation reaches training, validation and test batches with no hook to forget.

>>> import numpy as np
>>> x = np.full((4, 1, 2, 2), 255, np.uint8)
>>> ds = ImageTensors(x, np.array([0, 1, 0, 1]), mean=(0.5,), std=(0.25,))
>>> len(ds), ds[0][0].flatten().tolist(), int(ds[1][1])
(4, [2.0, 2.0, 2.0, 2.0], 1)
>>> train, val = holdout(np.array([0] * 10 + [1] * 10), 0.2, seed=0)
>>> len(train), len(val), set(train) & set(val)
(16, 4, set())
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from nasir.backends.torch.data import DataSplits
from nasir.backends.torch.datasets.augment import BatchAugment
from nasir.backends.torch.datasets.options import DataError

__all__ = [
    "ImageTensors",
    "cached",
    "channel_stats",
    "file_key",
    "holdout",
    "make_augment",
    "make_splits",
]

T = TypeVar("T")


class ImageTensors(Dataset):
    """Map-style dataset of images and integer labels (see the module docstring).

    Args:
        images: ``N×C×H×W`` uint8 (scaled by 1/255) or float array / tensor.
        labels: ``N`` integer labels.
        mean, std: per-channel normalisation (None: none).
    """

    def __init__(self, images: Any, labels: Any, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        x = torch.as_tensor(np.ascontiguousarray(images))
        if x.dtype != torch.uint8:
            x = x.to(torch.float32)
        self.images = x
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if x.dim() != 4 or len(self.labels) != len(x):
            raise DataError(f"images must be N×C×H×W with one label each, got "
                            f"{tuple(x.shape)} and {len(self.labels)} labels")
        c = x.shape[1]
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(
            c, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(
            c, 1, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-item shape ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return len(self.labels)

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._convert(self.images[i])
        if self.images.dtype != torch.uint8 and self.mean is None:
            x = x.clone()  # still a view of the stored images
        return x, self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self._convert(self.images[idx])
        return list(zip(x.unbind(0), self.labels[idx].unbind(0)))


def holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` indices: ``round(N * fraction)`` samples (at least one) go to
    validation, shared out over the classes in proportion to their sizes (seeded)."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    want = min(n - 1, max(1, int(n * fraction + 0.5)))
    share = counts * fraction
    quota = np.floor(share).astype(np.int64)
    extra = want - int(quota.sum())
    if extra > 0:  # the largest remainders get one more (ties: at random)
        rank = np.lexsort((rng.random(len(counts)), -(share - quota)))
        quota[rank[:extra]] += 1
    val = [rng.permutation(order[a:a + c])[:q] for a, c, q in zip(starts, counts, quota)]
    chosen = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(n), chosen)
    if len(train) == 0 or len(chosen) == 0:
        raise DataError(f"cannot hold out validation data from {n} samples "
                        f"(val_fraction={fraction})")
    return train, chosen


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``N×C×H×W`` images on the [0, 1] scale (in chunks)."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    c = images.shape[1]
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for a in range(0, len(images), 4096):
        x = images[a:a + 4096].astype(np.float64) / scale
        total += x.sum(axis=(0, 2, 3))
        squares += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_augment(opts: Any, shape: tuple[int, ...], *, standard: bool = False,
                 flip: bool = False, fill: Sequence[float] = (0.0,)) -> BatchAugment | None:
    """The training augmentation the options ask for (None: none).

    ``standard`` / ``flip`` are the set's defaults for ``augment`` / ``flip``; the crop
    pads by ``crop_padding`` or H/8 rounded; ``cutout`` applies whenever it is > 0."""
    on = standard if opts.augment is None else opts.augment
    pad = 0
    if on:
        pad = max(1, round(shape[-2] / 8)) if opts.crop_padding is None else opts.crop_padding
    aug = BatchAugment(crop_padding=pad, flip=bool(on and (flip if opts.flip is None
                                                           else opts.flip)),
                       cutout=opts.cutout, fill=tuple(fill))
    return aug if aug.active else None


def make_splits(name: str, train: tuple[np.ndarray, np.ndarray],
                val: tuple[np.ndarray, np.ndarray] | None,
                test: tuple[np.ndarray, np.ndarray] | None, *, num_classes: int,
                val_fraction: float, seed: int, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None,
                augment: BatchAugment | None = None) -> DataSplits:
    """:class:`DataSplits` of image arrays; without ``val`` a stratified ``val_fraction``
    of ``train`` is held out with ``seed``."""
    x, y = train
    if val is None:
        tr, va = holdout(y, val_fraction, seed)
        train, val = (x[tr], y[tr]), (x[va], y[va])

    def ds(part: tuple[np.ndarray, np.ndarray]) -> ImageTensors:
        return ImageTensors(np.array(part[0], copy=True), part[1], mean, std)

    tr_ds = ds(train)
    return DataSplits(tr_ds, ds(val), ds(test) if test is not None else None, num_classes,
                      tr_ds.input_shape, augment=augment, name=name)


_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 4


def file_key(paths: Sequence[Path]) -> tuple:
    """Path, size and mtime of each file: what a cached parse depends on."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def cached(key: tuple, load: Callable[[], T]) -> T:
    """``load()`` once per ``key`` in this process (the last few keys are kept)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = load()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value
