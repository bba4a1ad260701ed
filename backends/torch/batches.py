"""Batches at device speed: in-memory image sets are held and batched on the training device.

A GPU trial fed by a Python ``DataLoader`` spends its time collating samples one by one.
:func:`device_loader` gives the training loops their batches instead:

* an in-memory set — a ``TensorDataset`` of ``(images, labels)``, nasir's
  :class:`~nasir.backends.torch.datasets.tensors.ImageTensors` (digits, CIFAR, MNIST, SVHN,
  ``npz:`` and image folders all load as one), or a ``Subset`` of either — is copied to the
  device once (uint8 images stay uint8) and cut into batches there by
  :class:`DeviceBatches`: one gather per batch, then scaling to [0, 1] and the set's
  normalisation on the device. The estimator applies the data's ``augment`` to the batch
  on the device as well;
* anything else (your own ``Dataset``, a set too large to hold on the GPU) goes through a
  ``DataLoader`` — with worker processes and pinned memory when the device is CUDA — and
  its batches are moved to the device as they come (:class:`DeviceLoader`); a
  ``DataLoader`` or iterable you pass is used as it is.

The order is seeded and the same on every device: :class:`DeviceBatches` draws from its
``torch.Generator`` exactly what a shuffling ``DataLoader`` over the same set draws (one
64-bit seed when a pass starts, its permutation, and the spare permutation the sampler draws
when a pass ends), so replacing the ``DataLoader`` left every seeded CPU result as it was,
and loaders that share one generator keep interleaving the same way.

>>> x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
>>> ds = torch.utils.data.TensorDataset(x, torch.arange(10))
>>> def held(): return device_loader(ds, 4, shuffle=True, device=torch.device("cpu"),
...                                  generator=torch.Generator().manual_seed(0))
>>> b = held()
>>> type(b).__name__, len(b), sorted(int(v) for _, y in b for v in y)
('DeviceBatches', 3, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
>>> dl = torch.utils.data.DataLoader(ds, 4, shuffle=True,
...                                  generator=torch.Generator().manual_seed(0))
>>> b = held()
>>> [[int(v) for v in y] for _, y in b] == [[int(v) for v in y] for _, y in dl]
True
>>> [[int(v) for v in y] for _, y in b] == [[int(v) for v in y] for _, y in dl]  # 2nd pass
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from nasir.backends.torch.device import default_loader_workers, free_memory

__all__ = ["HOLD_BYTES", "DeviceBatches", "DeviceLoader", "device_loader", "held_tensors"]

#: in-memory sets up to this many bytes (and a quarter of the GPU's free memory) are held
#: on a GPU whole; larger ones go through a DataLoader
HOLD_BYTES = 2 << 30

Held = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def held_tensors(data: Any) -> Held | None:
    """``(images, labels, mean, std)`` of an in-memory set (a ``Subset`` gathered), or
    ``None`` when ``data`` is not one :class:`DeviceBatches` can hold."""
    from nasir.backends.torch.datasets.tensors import ImageTensors

    idx: torch.Tensor | None = None
    while isinstance(data, Subset):
        sub = torch.as_tensor(list(data.indices), dtype=torch.long)
        idx = sub if idx is None else sub[idx]
        data = data.dataset
    mean = std = None
    if isinstance(data, ImageTensors):
        x, y, mean, std = data.images, data.labels, data.mean, data.std
    elif isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    else:
        return None
    if idx is not None:
        x, y = x[idx], y[idx]
    return x, y, mean, std


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class DeviceBatches:
    """Seeded batches of tensors held on one device (see the module docstring).

    Args:
        images, labels: the whole set (moved to ``device`` once).
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: a new seeded order every pass (else the stored order).
        generator: the CPU ``torch.Generator`` the order comes from (``None``: the global
            one, as a ``DataLoader`` without one does).
        device: where the batches live.
        mean, std: per-channel normalisation applied to each batch (after uint8 images are
            scaled to [0, 1]).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        # batches are cut from rows of a 2-d view, so they have a stacked DataLoader batch's
        # standard strides: a gather on the 4-d tensor gives a size-1 channel dim the
        # channels-last stride, and convolutions then take another path (other last bits)
        self._rows = self.images.reshape(len(self.images), -1)
        self.labels = labels.to(self.device)
        self.mean = None if mean is None else mean.to(self.device)
        self.std = None if std is None else std.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # a DataLoader draws its workers' base seed when a pass starts: drawn here too, so
        # a generator shared with other loaders (or the global one) moves as it did
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._pass()

    def _pass(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.labels), self.batch_size
        gen = self.generator
        order = None
        if self.shuffle:
            if gen is None:  # RandomSampler without a generator seeds its own
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                gen = torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=gen).to(self.device)
        full = n // bs
        for b in range(full):
            yield self._batch(order, b * bs, (b + 1) * bs)
        if order is not None:  # RandomSampler's spare permutation at the end of a pass
            torch.randperm(n, generator=gen)
        if n % bs:
            yield self._batch(order, full * bs, n)

    def _batch(self, order: torch.Tensor | None, a: int, b: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self.images.shape[1:]
        if order is None:
            x, y = self._rows[a:b].view(-1, *shape), self.labels[a:b].clone()
        else:
            idx = order[a:b]
            x, y = self._rows[idx].view(-1, *shape), self.labels[idx]
        converted = False
        if x.dtype == torch.uint8:
            x, converted = x.to(torch.float32) / 255.0, True
        if self.mean is not None and self.std is not None:
            x, converted = (x - self.mean) / self.std, True
        if order is None and not converted:
            x = x.clone()  # still a view of the held images
        return x, y


class DeviceLoader:
    """A loader whose batches (tuples or lists of tensors) are moved to ``device``."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self._non_blocking = device.type == "cuda"

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)  # now, as iterating the loader itself would
        return (self._move(b) for b in it)

    def _move(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=self._non_blocking)
        if isinstance(batch, tuple | list):
            return type(batch)(self._move(b) for b in batch)
        return batch


def _fits(held: Held, device: torch.device, hold_bytes: int | None) -> bool:
    if device.type == "cpu":
        return True  # already in memory: holding it costs nothing more
    size = _nbytes(held[0]) + _nbytes(held[1])
    limit = HOLD_BYTES if hold_bytes is None else hold_bytes
    free = free_memory(device)
    return size <= limit and (free is None or size <= free // 4)


def device_loader(data: Any, batch_size: int, *, shuffle: bool,
                  generator: torch.Generator | None, device: torch.device,
                  num_workers: int | None = None, hold_bytes: int | None = None) -> Any:
    """Batches of ``data`` on ``device`` (see the module docstring).

    ``generator``: the seeded CPU generator of the order. ``num_workers``: DataLoader
    workers for data that is not held (``None``:
    :func:`~nasir.backends.torch.device.default_loader_workers`). ``hold_bytes``: the most
    a GPU holds (default :data:`HOLD_BYTES`)."""
    if isinstance(data, DataLoader) or not hasattr(data, "__getitem__"):
        return data if device.type == "cpu" else DeviceLoader(data, device)
    held = held_tensors(data)
    if held is not None and _fits(held, device, hold_bytes):
        x, y, mean, std = held
        return DeviceBatches(x, y, batch_size, shuffle=shuffle, generator=generator,
                             device=device, mean=mean, std=std)
    workers = default_loader_workers(device) if num_workers is None else int(num_workers)
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    return loader if device.type == "cpu" else DeviceLoader(loader, device)
