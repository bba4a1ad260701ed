"""Readers of the published file formats (no pickle anywhere).

- CIFAR binary batches: records of label byte(s) then 3,072 pixel bytes (1,024 red, 1,024
  green, 1,024 blue, row-major 32×32). CIFAR-10 has 1 label byte; CIFAR-100 has 2 (coarse,
  fine) and nasir uses the fine label.
- idx (MNIST, Fashion-MNIST), gzipped or not: two zero bytes, a type byte (``0x08`` =
  unsigned byte), the number of dimensions, then each dimension as a big-endian uint32,
  then the data.
- SVHN ``*_32x32.mat`` (MATLAB v5, read with ``scipy.io.loadmat``, which does not unpickle):
  ``X`` is 32×32×3×N uint8, ``y`` is N×1 with 10 meaning the digit 0.

>>> import gzip, os, tempfile
>>> import numpy as np
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "labels-idx1-ubyte.gz")
>>> with gzip.open(p, "wb") as f:
...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
>>> read_idx(p).tolist()
[7, 0, 9]
>>> q = os.path.join(d, "batch.bin")
>>> np.concatenate([[3], np.zeros(3072)]).astype(np.uint8).tofile(q)
>>> x, y = read_cifar(q, label_bytes=1)
>>> x.shape, y.tolist()
((1, 3, 32, 32), [3])
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from nasir.backends.torch.datasets.options import DataError

__all__ = ["read_cifar", "read_idx", "read_svhn"]

_FIX = "delete it and fetch the published file again (download=true)"


def read_cifar(path: str | Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N×3×32×32`` uint8 and labels of one CIFAR binary file (the last label
    byte of each record: CIFAR-100's fine label)."""
    raw = np.fromfile(path, dtype=np.uint8)
    rec = 3072 + label_bytes
    if raw.size == 0 or raw.size % rec:
        raise DataError(f"{path} is not a CIFAR binary file: {raw.size} bytes is not a "
                        f"multiple of the {rec}-byte record; {_FIX}")
    r = raw.reshape(-1, rec)
    return r[:, label_bytes:].reshape(-1, 3, 32, 32), r[:, label_bytes - 1].astype(np.int64)


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array of an idx file (``.gz`` files are decompressed)."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = Path(path).read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; {_FIX}") from None
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number "
                        f"{data[:4].hex() or 'none'}); {_FIX}")
    ndim = data[3]
    head = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:head]) if len(data) >= head else ()
    if len(dims) != ndim or len(data) != head + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or padded: header {dims} does not match its "
                        f"{len(data)} bytes; {_FIX}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def read_svhn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N×3×32×32`` uint8 and labels 0–9 of an SVHN ``*_32x32.mat`` file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:  # scipy raises several kinds on a damaged file
        raise DataError(f"cannot read {path} as a MATLAB file ({type(e).__name__}: {e}); "
                        f"{_FIX}") from None
    x, y = mat.get("X"), mat.get("y")
    if (x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3)
            or y.size != x.shape[3]):
        raise DataError(f"{path} is not an SVHN 32×32 file: expected X of 32×32×3×N and "
                        f"y of N×1; {_FIX}")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1).astype(np.uint8)), labels
