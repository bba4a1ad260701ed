"""User data on disk: ``npz:PATH`` arrays and ``imagefolder:PATH`` image folders.

>>> import os, tempfile
>>> import numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
>>> np.savez(p, x=np.zeros((20, 8, 8, 3), np.uint8), y=np.arange(20, dtype=np.int16) % 2)
>>> s = load_npz(p, NpzOptions(), seed=0)
>>> s.input_shape, s.num_classes, len(s.train), len(s.val), s.test
((3, 8, 8), 2, 18, 2, None)
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nasir.backends.torch.data import DataSplits
from nasir.backends.torch.datasets.options import DataError, FolderOptions, NpzOptions
from nasir.backends.torch.datasets.tensors import (
    cached,
    channel_stats,
    file_key,
    holdout,
    make_augment,
    make_splits,
)

__all__ = ["load_imagefolder", "load_npz", "resolve", "to_nchw"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

Pair = tuple[np.ndarray, np.ndarray]


def resolve(path: str, base_dir: str | None) -> Path:
    """``path`` relative to ``base_dir`` (the experiment's folder) or the working folder."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(base_dir or ".") / p).absolute()


def to_nchw(x: np.ndarray, channels_last: bool | None, what: str) -> np.ndarray:
    """Images as ``N×C×H×W``: N×H×W gets one channel; a 4-d array is N×H×W×C when
    ``channels_last`` says so or, left None, when its last dimension is 1 or 3 and its
    second is not. uint8 stays uint8 (scaled later); other numbers become float32."""
    if x.dtype.kind not in "uifb":
        raise DataError(f"{what} has dtype {x.dtype}; images must be numbers")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if channels_last is None:
            channels_last = x.shape[3] in (1, 3) and x.shape[1] not in (1, 3)
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{what} has shape {x.shape}; expected N×C×H×W, N×H×W×C or N×H×W")
    return np.ascontiguousarray(x if x.dtype == np.uint8 else x.astype(np.float32))


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} has dtype {y.dtype}; labels must be integers 0..K-1")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what} has shape {y.shape}; expected one label per image ({n})")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{what} holds negative labels; labels must be 0..K-1 (remap them)")
    return y.astype(np.int64)


def _read_npz(path: Path, channels_last: bool | None) -> dict[str, Pair]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read {path} as an .npz of arrays: {e}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path} has no array {missing[0]!r} (it has "
                        f"{', '.join(sorted(arrays)) or 'none'}); expected x, y and "
                        f"optionally x_val, y_val, x_test, y_test")
    out = {}
    for part, suffix in (("train", ""), ("val", "_val"), ("test", "_test")):
        xk, yk = "x" + suffix, "y" + suffix
        if (xk in arrays) != (yk in arrays):
            raise DataError(f"{path} has {xk if xk in arrays else yk} without "
                            f"{yk if xk in arrays else xk}; give both or neither")
        if xk in arrays:
            x = to_nchw(arrays[xk], channels_last, f"{path}:{xk}")
            out[part] = (x, _labels(arrays[yk], len(x), f"{path}:{yk}"))
    return out


def _num_classes(parts: dict[str, Pair], given: int | None, where: str) -> int:
    top = max((int(y.max()) for _, y in parts.values() if len(y)), default=0) + 1
    if given is not None and top > given:
        raise DataError(f"{where} has label {top - 1} but num_classes={given}")
    return given or top


def _finish(name: str, parts: dict[str, Pair], opts: Any, seed: int,
            num_classes: int) -> DataSplits:
    x, _ = parts["train"]
    shapes = {k: v[0].shape[1:] for k, v in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{name}: the splits have different image shapes {shapes}")
    mean = std = None
    fill: tuple[float, ...] = (0.0,)
    if opts.normalize:
        mean, std = channel_stats(x)
        fill = tuple(-m / s for m, s in zip(mean, std))
    aug = make_augment(opts, x.shape[1:], fill=fill)
    return make_splits(name, parts["train"], parts.get("val"), parts.get("test"),
                       num_classes=num_classes, val_fraction=opts.val_fraction, seed=seed,
                       mean=mean, std=std, augment=aug)


def load_npz(path: str | Path, opts: NpzOptions, *, seed: int,
             name: str | None = None) -> DataSplits:
    """:class:`DataSplits` of an ``.npz`` (see the package docstring for the rules)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz file not found: {p}; fix: check the path (relative paths "
                        f"start at the experiment file's folder)")
    parts = cached(("npz", file_key([p]), opts.channels_last_input),
                   lambda: _read_npz(p, opts.channels_last_input))
    return _finish(name or f"npz:{path}", parts, opts, seed,
                   _num_classes(parts, opts.num_classes, str(p)))


def _images_of(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for label, c in enumerate(classes):
        d = folder / c
        if d.is_dir():
            out += [(f, label) for f in sorted(d.iterdir())
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    return out


def _read_images(files: list[tuple[Path, int]], opts: FolderOptions, grey: bool,
                 where: Path) -> Pair:
    from PIL import Image

    arrays = []
    for f, _ in files:
        with Image.open(f) as src:
            im = src.convert("L" if grey else "RGB")
        if opts.size is not None and im.size != (opts.size, opts.size):
            im = im.resize((opts.size, opts.size), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if grey else a.transpose(2, 0, 1))
    if not arrays:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders "
                        f"of {where}")
    return np.stack(arrays), np.array([label for _, label in files], np.int64)


def _scan(root: Path, opts: FolderOptions) -> tuple[dict[str, list], bool, list[str]]:
    from PIL import Image, UnidentifiedImageError

    split = (root / "train").is_dir()
    folders = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} \
        if split else {"all": root}
    first = folders["train" if split else "all"]
    classes = sorted(d.name for d in first.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"no class folders in {first}; expected {first}/<class>/<image>")
    for d in folders.values():
        extra = sorted({e.name for e in d.iterdir() if e.is_dir()} - set(classes))
        if extra:
            raise DataError(f"{d} has class folders {extra} that {first} lacks")
    files = {s: _images_of(d, classes) for s, d in folders.items()}
    modes: set[str] = set()
    sizes: dict[tuple[int, int], Path] = {}
    for f, _ in (x for fs in files.values() for x in fs):
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
                sizes.setdefault(im.size, f)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {f}: {e}") from None
    if opts.size is None and len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise DataError(f"images in {root} differ in size ({fa}: {a[0]}×{a[1]}, {fb}: "
                        f"{b[0]}×{b[1]}); fix: set option size=N to resize them to N×N")
    grey = opts.grayscale if opts.grayscale is not None else modes <= _GREY_MODES
    return files, grey, classes


def _load_folder(root: Path, opts: FolderOptions, seed: int) -> tuple[dict[str, Pair], int]:
    files, grey, classes = _scan(root, opts)
    parts = {s: _read_images(fs, opts, grey, root / s) for s, fs in files.items() if fs}
    if "all" in parts:
        x, y = parts.pop("all")
        if opts.test_fraction > 0:
            keep, test = holdout(y, opts.test_fraction, seed + 1)
            parts["test"] = (x[test], y[test])
            x, y = x[keep], y[keep]
        parts["train"] = (x, y)
    if "train" not in parts:
        raise DataError(f"no training images in {root}")
    return parts, len(classes)


def load_imagefolder(path: str | Path, opts: FolderOptions, *, seed: int,
                     name: str | None = None) -> DataSplits:
    """:class:`DataSplits` of an image folder (see the package docstring for layouts)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}; fix: check the path (relative "
                        f"paths start at the experiment file's folder)")
    listing = tuple(sorted(f for f in root.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
    key = ("imagefolder", str(root.resolve()), opts.size, opts.grayscale, opts.test_fraction,
           seed if opts.test_fraction > 0 else None, file_key(list(listing)))
    parts, num_classes = cached(key, lambda: _load_folder(root, opts, seed))
    return _finish(name or f"imagefolder:{path}", parts, opts, seed, num_classes)
