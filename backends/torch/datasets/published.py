"""The published image sets: where their files live, checksums, download, loading.

Each set is read from its publisher's own files under ``root`` (see
:func:`data_root`); archives are checked and unpacked there, and every file with a known
MD5 is checked once per process (again after it changes).

>>> sorted(PUBLISHED)
['cifar10', 'cifar100', 'fashion_mnist', 'mnist', 'svhn']
>>> PUBLISHED["cifar100"].files
('cifar-100-binary/train.bin', 'cifar-100-binary/test.bin')
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasir.backends.torch.data import DataSplits
from nasir.backends.torch.datasets.formats import read_cifar, read_idx, read_svhn
from nasir.backends.torch.datasets.options import DataError, PublishedOptions
from nasir.backends.torch.datasets.tensors import cached, file_key, make_augment, make_splits

__all__ = ["PUBLISHED", "Published", "data_root", "ensure_files", "load_published"]

_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class Published:
    """One published set: its files (relative to ``root``; the training files first, the
    test files last), MD5 sums, optional archive, download URLs and statistics."""

    name: str
    files: tuple[str, ...]
    md5: tuple[tuple[str, str], ...]
    archive: str | None
    urls: tuple[str, ...]
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    flip: bool = False

    def checksum(self, file: str) -> str | None:
        """The published MD5 of ``file`` (None: not known)."""
        return dict(self.md5).get(file)


def _cifar_files(folder: str, train: list[str], test: str) -> tuple[str, ...]:
    return (*(f"{folder}/{f}" for f in train), f"{folder}/{test}")


PUBLISHED: dict[str, Published] = {p.name: p for p in (
    Published("cifar10", _cifar_files("cifar-10-batches-bin",
                                      [f"data_batch_{i}.bin" for i in range(1, 6)],
                                      "test_batch.bin"),
              (("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
               ("cifar-10-batches-bin/data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
               ("cifar-10-batches-bin/data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
               ("cifar-10-batches-bin/data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
               ("cifar-10-batches-bin/data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
               ("cifar-10-batches-bin/data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
               ("cifar-10-batches-bin/test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d")),
              "cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/",),
              (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
              augment=True, flip=True),
    Published("cifar100", _cifar_files("cifar-100-binary", ["train.bin"], "test.bin"),
              (("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),
               ("cifar-100-binary/train.bin", "6172c7755cfe09b2fe270c85cebc1b15"),
               ("cifar-100-binary/test.bin", "4499cfba6c016c1be1438163640a0898")),
              "cifar-100-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/",),
              (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
              augment=True, flip=True),
    Published("mnist", _IDX,
              tuple(zip(_IDX, ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                               "d53e105ee54ea40749a09fcbcd1e9432",
                               "9fb629c4189551a2d022fa330f9573f3",
                               "ec29112dd5afa0611ce80d1b7f02629c"))), None,
              ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/"),
              (1, 28, 28), 10, (0.1307,), (0.3081,)),
    Published("fashion_mnist", _IDX,
              tuple(zip(_IDX, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                               "25c81989df183df01b3e8a0aad5dffbe",
                               "bef4ecab320f06d8554ea6380940ec79",
                               "bb300cfdad3c16e7a12a480ee83cd310"))), None,
              ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
               "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
               "fashion/"),
              (1, 28, 28), 10, (0.2860,), (0.3530,)),
    Published("svhn", ("train_32x32.mat", "test_32x32.mat"),
              (("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
               ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")), None,
              ("http://ufldl.stanford.edu/housenumbers/",),
              (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
              augment=True),
)}


def data_root(name: str, root: str | None, base_dir: str | None = None) -> Path:
    """The folder of a set's files: ``root`` (relative to ``base_dir`` or the working
    folder), else ``$NASIR_DATA_DIR/<name>``, else ``~/.cache/nasir/data/<name>``."""
    if root is None:
        env = os.environ.get("NASIR_DATA_DIR")
        return (Path(env).expanduser() if env else Path.home() / ".cache/nasir/data") / name
    path = Path(root).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    return path.absolute()


def _missing(p: Published, root: Path, missing: list[str], failed: str = "") -> str:
    also = f" (or the archive {p.archive}, unpacked there)" if p.archive else ""
    fix = (f"put the files there by hand (from {p.urls[0]}) or retry" if failed else
           f"set download=true to fetch them from {p.urls[0]}, or put the files there")
    return (f"{p.name}: {failed}data files not found in {root}: expected "
            f"{', '.join(missing)}{also}; fix: {fix} (option root picks another folder)")


_VERIFIED: set[tuple[Any, ...]] = set()


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify(p: Published, path: Path, file: str) -> None:
    want = p.checksum(file)
    if want is None:
        return
    key = (*file_key([path]), want)
    if key in _VERIFIED:
        return
    got = _md5(path)
    if got != want:
        raise DataError(f"{p.name}: {path} is corrupt or not the published file (MD5 {got}, "
                        f"expected {want}); fix: delete it and fetch it again "
                        f"(download=true), or set verify=false to use it anyway")
    _VERIFIED.add(key)


def _download(p: Published, file: str, root: Path, missing: list[str]) -> None:
    dest = root / file
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    errors = []
    for base in p.urls:
        url = base + Path(file).name
        print(f"nasir: downloading {url} to {dest}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            tmp.unlink(missing_ok=True)
            continue
        want = p.checksum(file)
        if want is not None and _md5(tmp) != want:
            errors.append(f"{url}: MD5 mismatch")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, dest)
        return
    raise DataError(_missing(p, root, missing, f"download failed ({'; '.join(errors)}); "))


def _extract(p: Published, archive: Path, wanted: list[str], root: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                name = m.name.removeprefix("./")
                if name not in wanted or not m.isfile():
                    continue
                src = tar.extractfile(m)
                if src is None:  # not for a regular file (isfile above)
                    raise tarfile.TarError(f"member {name} cannot be read")
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
                with src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp, dest)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{p.name}: cannot unpack {archive} ({e}); fix: delete it and fetch "
                        f"it again (download=true)") from None


def ensure_files(p: Published, root: Path, opts: PublishedOptions) -> list[Path]:
    """The paths of ``p.files`` under ``root``: unpacked from the archive or downloaded
    when missing (``download``), checked against their MD5 sums (``verify``)."""
    def missing() -> list[str]:
        return [f for f in p.files if not (root / f).is_file()]

    todo = missing()
    if todo and p.archive is not None:
        archive = root / p.archive
        if not archive.is_file() and opts.download:
            _download(p, p.archive, root, todo)
        if archive.is_file():
            if opts.verify:
                _verify(p, archive, p.archive)
            _extract(p, archive, todo, root)
    elif todo and opts.download:
        for f in todo:
            _download(p, f, root, todo)
    todo = missing()
    if todo:
        raise DataError(_missing(p, root, todo))
    if opts.verify:
        for f in p.files:
            _verify(p, root / f, f)
    return [root / f for f in p.files]


def _read(p: Published, paths: list[Path]) -> tuple[np.ndarray, ...]:
    if p.name.startswith("cifar"):
        parts = [read_cifar(q, 1 if p.name == "cifar10" else 2) for q in paths]
        train, test = parts[:-1], parts[-1]
        x, y = np.concatenate([a for a, _ in train]), np.concatenate([b for _, b in train])
        out: tuple[np.ndarray, ...] = (x, y, *test)
    elif p.name == "svhn":
        out = (*read_svhn(paths[0]), *read_svhn(paths[1]))
    else:
        xs, ys, xt, yt = (read_idx(q) for q in paths)
        out = (xs[:, None], ys.astype(np.int64), xt[:, None], yt.astype(np.int64))
    x, y, xt, yt = out
    if (x.shape[1:] != p.shape or xt.shape[1:] != p.shape or len(x) != len(y)
            or len(xt) != len(yt) or max(int(y.max()), int(yt.max())) >= p.num_classes):
        raise DataError(f"{p.name}: the files in {paths[0].parent} do not hold "
                        f"{'×'.join(map(str, p.shape))} images with one label in "
                        f"0..{p.num_classes - 1} each; fix: fetch them again (download=true)")
    return out


def load_published(name: str, opts: PublishedOptions, *, base_dir: str | None,
                   seed: int) -> DataSplits:
    """:class:`DataSplits` of a published set: ``val_fraction`` of the official training
    split held out (stratified, seeded), the official test split as ``test``."""
    p = PUBLISHED[name]
    root = data_root(name, opts.root, base_dir)
    paths = ensure_files(p, root, opts)
    x, y, xt, yt = cached(("published", name, file_key(paths)), lambda: _read(p, paths))
    mean, std = (p.mean, p.std) if opts.normalize else (None, None)
    fill = tuple(-m / s for m, s in zip(p.mean, p.std)) if opts.normalize else (0.0,)
    aug = make_augment(opts, p.shape, standard=p.augment, flip=p.flip, fill=fill)
    return make_splits(name, (x, y), None, (xt, yt), num_classes=p.num_classes,
                       val_fraction=opts.val_fraction, seed=seed, mean=mean, std=std,
                       augment=aug)
