"""Data sets of the training path: published formats, npz, image folders, user functions.

Every file here is written in the published format into tmp_path; nothing is downloaded
(the download path is exercised with a stubbed ``urlopen``).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import struct
import sys
import tarfile
import urllib.error

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from nasir.backends.torch.data import DataSplits, make_loader
from nasir.backends.torch.datasets import (
    DATASETS,
    PUBLISHED,
    BatchAugment,
    DataError,
    ImageTensors,
    check_data_options,
    data_root,
    load_data,
)
from nasir.backends.torch.datasets import published as published_mod
from nasir.backends.torch.datasets.tensors import holdout
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.errors import NasirError
from nasir.spaces import get_space

# -- writers of the published formats ---------------------------------------------------


def _cifar_bytes(ids: np.ndarray, label_bytes: int, classes: int) -> bytes:
    rec = np.zeros((len(ids), label_bytes + 3072), np.uint8)
    rec[:, label_bytes - 1] = ids % classes  # the (fine) label
    if label_bytes == 2:
        rec[:, 0] = 19 - ids % 20  # coarse label: must be ignored
    px = rec[:, label_bytes:]
    px[:, 0] = ids % 256  # red (0, 0) and (0, 1) spell the record's id
    px[:, 1] = ids // 256
    px[:, 1024] = 255  # green (0, 0)
    px[:, 2048 + 32 * 3 + 5] = 7  # blue (3, 5)
    return rec.tobytes()


def _write_cifar10(root, per_batch=20, test=10) -> None:
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for i in range(5):
        ids = np.arange(i * per_batch, (i + 1) * per_batch)
        (d / f"data_batch_{i + 1}.bin").write_bytes(_cifar_bytes(ids, 1, 10))
    (d / "test_batch.bin").write_bytes(_cifar_bytes(np.arange(1000, 1000 + test), 1, 10))


def _idx(array: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(head + array.astype(np.uint8).tobytes())


def _write_mnist(root, n=30, test=10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count, start in (("train", n, 0), ("t10k", test, 100)):
        ids = np.arange(start, start + count)
        images = np.zeros((count, 28, 28), np.uint8)
        images[:, 0, 0] = ids
        images[:, 27, 1] = 255
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(images))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(ids % 10))


def _write_svhn(root, n=30, test=10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, count, start in (("train", n, 0), ("test", test, 100)):
        ids = np.arange(start, start + count)
        x = np.zeros((32, 32, 3, count), np.uint8)  # H×W×C×N, as MATLAB writes it
        x[0, 0, 0, :] = ids
        x[1, 2, 2, :] = 200
        y = (ids % 10).reshape(-1, 1)
        y[y == 0] = 10  # SVHN: 10 is the digit 0
        scipy.io.savemat(str(root / f"{name}_32x32.mat"), {"X": x, "y": y})


def _ids(ds: ImageTensors) -> set[int]:
    im = ds.images.to(torch.int64)
    return set((im[:, 0, 0, 0] + 256 * im[:, 0, 0, 1]).tolist())


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _with_md5(monkeypatch, name: str, root) -> None:
    """Make ``PUBLISHED[name]`` expect the MD5 sums of the fake files under ``root``."""
    p = PUBLISHED[name]
    sums = tuple((f, _md5(root / f)) for f, _ in p.md5 if (root / f).is_file())
    monkeypatch.setitem(PUBLISHED, name, dataclasses.replace(p, md5=sums))


# -- specs and options --------------------------------------------------------------------


def test_unknown_data_set_is_one_line_listing_names_and_forms():
    with pytest.raises(NasirError) as e:
        check_data_options("imagenet", None)
    msg = str(e.value)
    assert "\n" not in msg and "'imagenet'" in msg
    for word in (*DATASETS, "npz:PATH", "imagefolder:PATH", "module:function"):
        assert word in msg
    with pytest.raises(DataError, match="module:function"):
        check_data_options("my module:fn()", None)


def test_bad_option_names_option_data_set_and_valid_options():
    with pytest.raises(DataError) as e:
        check_data_options("cifar10", {"cutoff": 16})
    msg = str(e.value)
    assert "\n" not in msg
    assert "'cutoff'" in msg and "cifar10" in msg
    assert "cutout" in msg and "download" in msg and "val_fraction" in msg
    with pytest.raises(DataError, match=r"val_fraction=1\.5 for data set mnist"):
        check_data_options("mnist", {"val_fraction": 1.5})
    with pytest.raises(DataError, match=r"'size' for data set npz:x\.npz"):
        check_data_options("npz:x.npz", {"size": 8})
    # checking never reads: the files need not exist
    check_data_options("npz:no/such/file.npz", {"channels_last_input": True})
    check_data_options("imagefolder:nowhere", {"size": 16, "grayscale": True})
    check_data_options("svhn", {"root": "/nonexistent", "download": True, "cutout": 8})
    check_data_options("Fashion-MNIST", None)


# -- published formats --------------------------------------------------------------------


def test_cifar10_binary_batches_layout_normalisation_and_splits(tmp_path):
    _write_cifar10(tmp_path)
    s = load_data("cifar10", {"root": str(tmp_path), "verify": False}, seed=0)
    assert isinstance(s, DataSplits) and s.name == "cifar10"
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 10)
    tr, va, te = _ids(s.train), _ids(s.val), _ids(s.test)
    assert not tr & va and tr | va == set(range(100))  # held out of the training data
    assert te == set(range(1000, 1010))  # the official test split, kept apart
    assert sorted(s.val.labels.tolist()) == list(range(10))  # stratified: one per class
    x, y = s.train[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = PUBLISHED["cifar10"].mean, PUBLISHED["cifar10"].std
    assert x[1, 0, 0].item() == pytest.approx((1.0 - mean[1]) / std[1], rel=1e-5)
    assert x[2, 3, 5].item() == pytest.approx((7 / 255 - mean[2]) / std[2], rel=1e-5)
    assert x[2, 0, 0].item() == pytest.approx(-mean[2] / std[2], rel=1e-5)
    ids = s.train.images[:, 0, 0, 0].long() + 256 * s.train.images[:, 0, 0, 1].long()
    assert torch.equal(s.train.labels, ids % 10)
    # batches from a DataLoader are normalised too (train, val and test alike)
    xb, _ = next(iter(make_loader(s.test, 4, False, 0)))
    assert xb.shape == (4, 3, 32, 32) and xb[0, 1, 0, 0].item() == pytest.approx(
        (1.0 - mean[1]) / std[1], rel=1e-5)
    raw = load_data("cifar10", {"root": str(tmp_path), "verify": False, "normalize": False})
    assert raw.train[0][0][1, 0, 0].item() == 1.0
    # the hold-out is seeded: same seed same split, another seed another split
    again = load_data("cifar10", {"root": str(tmp_path), "verify": False}, seed=0)
    other = load_data("cifar10", {"root": str(tmp_path), "verify": False}, seed=1)
    assert _ids(again.val) == va and _ids(other.val) != va
    half = load_data("cifar10", {"root": str(tmp_path), "verify": False, "val_fraction": 0.5})
    assert len(half.val) == 50


def test_cifar100_uses_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    (d / "train.bin").write_bytes(_cifar_bytes(np.arange(200), 2, 100))
    (d / "test.bin").write_bytes(_cifar_bytes(np.arange(1000, 1020), 2, 100))
    s = load_data("cifar-100", {"root": str(tmp_path), "verify": False})
    assert s.num_classes == 100 and len(s.train) + len(s.val) == 200 and len(s.test) == 20
    for ds in (s.train, s.val, s.test):
        ids = ds.images[:, 0, 0, 0].long() + 256 * ds.images[:, 0, 0, 1].long()
        assert torch.equal(ds.labels, ids % 100)


def test_cifar_archive_is_unpacked_and_its_checksum_checked(tmp_path):
    src = tmp_path / "src"
    _write_cifar10(src)
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    with pytest.raises(DataError) as e:  # not the published archive
        load_data("cifar10", {"root": str(root)})
    msg = str(e.value)
    assert str(archive) in msg and "corrupt" in msg and "c32a1d4ab5d03f1284b67883e8d87530" in msg
    assert not (root / "cifar-10-batches-bin").exists()
    s = load_data("cifar10", {"root": str(root), "verify": False})
    assert (root / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert len(s.train) + len(s.val) == 100


def test_checksums_of_present_files_pass_and_fail(tmp_path, monkeypatch):
    _write_svhn(tmp_path)
    with pytest.raises(DataError, match="e26dedcc434d2e4c54c9b2d4a06d8373"):
        load_data("svhn", {"root": str(tmp_path)})  # fake files are not the published ones
    _with_md5(monkeypatch, "svhn", tmp_path)
    s = load_data("svhn", {"root": str(tmp_path)})
    assert len(s.test) == 10
    with open(tmp_path / "test_32x32.mat", "ab") as f:
        f.write(b"\0")  # one byte more: the file changed, so it is checked again
    with pytest.raises(DataError) as e:
        load_data("svhn", {"root": str(tmp_path)})
    assert "test_32x32.mat is corrupt" in str(e.value) and "verify=false" in str(e.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files(tmp_path, name):
    _write_mnist(tmp_path)
    s = load_data(name, {"root": str(tmp_path), "verify": False})
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 10)
    assert s.augment is None  # no standard augmentation for MNIST
    for ds in (s.train, s.val, s.test):
        assert torch.equal(ds.labels, ds.images[:, 0, 0, 0].long() % 10)
        assert int(ds.images[0, 0, 27, 1]) == 255
    mean, std = PUBLISHED[name].mean[0], PUBLISHED[name].std[0]
    assert s.train[0][0][0, 27, 1].item() == pytest.approx((1 - mean) / std, rel=1e-5)


def test_idx_bad_magic_is_a_clear_error(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01"))
    with pytest.raises(DataError, match="not an unsigned-byte idx file"):
        load_data("mnist", {"root": str(tmp_path), "verify": False})


def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path):
    _write_svhn(tmp_path)
    s = load_data("svhn", {"root": str(tmp_path), "verify": False, "normalize": False})
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert 0 in s.train.labels.tolist() + s.val.labels.tolist()
    for ds in (s.train, s.val, s.test):
        assert torch.equal(ds.labels, ds.images[:, 0, 0, 0].long() % 10)
        assert (ds.images[:, 2, 1, 2] == 200).all() and ds.images[:, 2, 2, 1].sum() == 0
    assert isinstance(s.augment, BatchAugment)
    assert s.augment.crop_padding == 4 and not s.augment.flip  # no flips for digits


def test_missing_files_name_the_files_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_data("cifar10", {"root": "data"}, base_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "data") in msg
    assert "cifar-10-batches-bin/data_batch_1.bin" in msg and "test_batch.bin" in msg
    assert "cifar-10-binary.tar.gz" in msg and "download=true" in msg
    with pytest.raises(DataError, match=r"train_32x32\.mat, test_32x32\.mat"):
        load_data("svhn", {"root": str(tmp_path)})


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(published_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_data("mnist", {"root": str(tmp_path), "download": True})
    msg = str(e.value)
    assert "\n" not in msg and "no network" in msg and "download failed" in msg
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg
    assert not list(tmp_path.glob("*.part"))


def test_download_writes_checked_files(tmp_path, monkeypatch):
    src = tmp_path / "server"
    _write_mnist(src)
    _with_md5(monkeypatch, "mnist", src)
    fetched = []

    def serve(url, timeout=None):
        fetched.append(url)
        return io.BytesIO((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(published_mod.urllib.request, "urlopen", serve)
    root = tmp_path / "root"
    s = load_data("mnist", {"root": str(root), "download": True})
    assert len(fetched) == 4 and fetched[0].startswith(PUBLISHED["mnist"].urls[0])
    assert len(s.test) == 10 and (root / "t10k-labels-idx1-ubyte.gz").is_file()
    # a mirror serving other bytes is refused
    bad = tmp_path / "bad"
    monkeypatch.setattr(published_mod.urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(b"junk"))
    with pytest.raises(DataError, match="MD5 mismatch"):
        load_data("mnist", {"root": str(bad), "download": True})


def test_second_load_reuses_the_parsed_files(tmp_path, monkeypatch):
    _write_cifar10(tmp_path)
    calls = []
    real = published_mod.read_cifar
    monkeypatch.setattr(published_mod, "read_cifar",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    opts = {"root": str(tmp_path), "verify": False}
    load_data("cifar10", opts)
    assert len(calls) == 6
    load_data("cifar10", opts, seed=3)
    assert len(calls) == 6
    f = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    load_data("cifar10", opts)
    assert len(calls) == 12


# -- npz ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_npz_label_dtypes_and_channels_last(tmp_path, dtype):
    x = np.zeros((40, 6, 6, 3), np.uint8)
    x[:, 0, 0, 2] = 255
    y = (np.arange(40) % 4).astype(dtype)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_data("npz:d.npz", base_dir=str(tmp_path))
    assert s.input_shape == (3, 6, 6) and s.num_classes == 4 and s.test is None
    assert (len(s.train), len(s.val)) == (36, 4)
    assert sorted(s.val.labels.tolist()) == [0, 1, 2, 3]
    xi, yi = s.train[0]
    assert xi[2, 0, 0].item() == 1.0 and xi.max().item() == 1.0 and yi.dtype == torch.int64


def test_npz_explicit_val_and_test_and_layout_rules(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.random((10, 5, 7)).astype(np.float64),
             y=np.arange(10, dtype=np.int16) % 2, x_val=rng.random((4, 5, 7)),
             y_val=np.array([0, 1, 0, 1], np.int16), x_test=rng.random((3, 5, 7)),
             y_test=np.array([[1], [0], [2]], np.int32))
    s = load_data(f"npz:{tmp_path / 'a.npz'}")
    assert s.input_shape == (1, 5, 7) and s.num_classes == 3
    assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 3)  # no hold-out: val given
    assert s.train[0][0].dtype == torch.float32
    # N×3×H×W is channels-first; the option overrides the guess
    np.savez(tmp_path / "b.npz", x=np.zeros((8, 3, 4, 3), np.uint8), y=np.zeros(8, np.int8))
    assert load_data("npz:b.npz", base_dir=str(tmp_path)).input_shape == (3, 4, 3)
    s = load_data("npz:b.npz", {"channels_last_input": True}, base_dir=str(tmp_path))
    assert s.input_shape == (3, 3, 4)
    s = load_data("npz:b.npz", {"normalize": True, "num_classes": 5}, base_dir=str(tmp_path))
    assert s.num_classes == 5


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.zeros((4, 2, 2)), y=np.array([0, -1, 0, 1]))
    with pytest.raises(DataError, match="negative labels"):
        load_data("npz:neg.npz", base_dir=str(tmp_path))
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 2, 2)), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="no array 'x'"):
        load_data("npz:nox.npz", base_dir=str(tmp_path))
    with pytest.raises(DataError, match="npz file not found"):
        load_data("npz:missing.npz", base_dir=str(tmp_path))
    np.savez(tmp_path / "fl.npz", x=np.zeros((4, 2, 2)), y=np.zeros(4, np.float32))
    with pytest.raises(DataError, match="labels must be integers"):
        load_data("npz:fl.npz", base_dir=str(tmp_path))


# -- image folders ------------------------------------------------------------------------


def _png(path, size=(6, 6), colour=(200, 10, 10), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)


def test_imagefolder_with_train_val_test_folders(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 1)):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _png(tmp_path / "imgs" / split / c / f"{i}.png", colour=colour)
    s = load_data("imagefolder:imgs", base_dir=str(tmp_path))
    assert s.input_shape == (3, 6, 6) and s.num_classes == 2
    assert (len(s.train), len(s.val), len(s.test)) == (8, 4, 2)
    for x, y in (s.train[i] for i in range(len(s.train))):
        assert x[0 if int(y) == 0 else 2].min().item() == 1.0  # cat red, dog blue


def test_imagefolder_class_folders_split_sizes_and_grey(tmp_path):
    for c in range(3):
        for i in range(10):
            _png(tmp_path / str(c) / f"{i}.png", size=(5 + i % 2, 5), colour=(c * 100,) * 3,
                 mode="L")
    with pytest.raises(DataError) as e:
        load_data(f"imagefolder:{tmp_path}")
    assert "differ in size" in str(e.value) and "size=" in str(e.value)
    s = load_data(f"imagefolder:{tmp_path}", {"size": 4, "test_fraction": 0.2}, seed=0)
    assert s.input_shape == (1, 4, 4) and s.num_classes == 3  # all grey: one channel
    assert (len(s.train), len(s.val), len(s.test)) == (22, 2, 6)
    rgb = load_data(f"imagefolder:{tmp_path}", {"size": 4, "grayscale": False})
    assert rgb.input_shape == (3, 4, 4) and rgb.test is None
    assert len(rgb.train) + len(rgb.val) == 30


# -- the user's own function ----------------------------------------------------------------


_DATA_MODULE = '''
import torch
from torch.utils.data import TensorDataset


class Labelled(TensorDataset):
    num_classes = 7


def make(n=12):
    x = torch.randint(0, 256, (n, 5, 5), dtype=torch.uint8)
    y = torch.arange(n) % 3
    return Labelled(x, y), TensorDataset(x[:4].float() / 255, y[:4])


def one():
    return TensorDataset(torch.zeros(20, 2, 3, 3), torch.arange(20) % 4)


def bad():
    return 42
'''


def test_module_function_from_a_file_and_a_module(tmp_path):
    (tmp_path / "nasir_test_datamod.py").write_text(_DATA_MODULE)
    s = load_data("nasir_test_datamod.py:make", {"kwargs": {"n": 9}}, base_dir=str(tmp_path))
    assert s.input_shape == (1, 5, 5) and s.num_classes == 7  # the num_classes attribute
    assert (len(s.train), len(s.val), s.test) == (9, 4, None)
    x, y = next(iter(make_loader(s.train, 4, True, 0)))
    assert x.dtype == torch.float32 and x.max() <= 1.0 and y.dtype == torch.int64
    s = load_data("nasir_test_datamod:one", base_dir=str(tmp_path), seed=0)
    assert s.num_classes == 4 and (len(s.train), len(s.val)) == (18, 2)
    assert str(tmp_path) not in sys.path
    with pytest.raises(DataError, match="returned int"):
        load_data("nasir_test_datamod.py:bad", base_dir=str(tmp_path))
    with pytest.raises(DataError, match="no function 'nope'"):
        load_data("nasir_test_datamod.py:nope", base_dir=str(tmp_path))


# -- augmentation and the estimator -----------------------------------------------------------


def test_augment_is_seeded_changes_pixels_and_works_batchwise():
    x = torch.rand(16, 3, 8, 8)
    aug = BatchAugment(crop_padding=2, flip=True, cutout=4, fill=(-1.0, -2.0, -3.0))
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x) and torch.equal(x, x.clone())  # input left alone
    flips = BatchAugment(flip=True)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(flips[i], x[i]) for i in range(16)]
    mirrored = [torch.equal(flips[i], x[i].flip(2)) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    cut = BatchAugment(cutout=4)(torch.ones(8, 1, 16, 16), torch.Generator().manual_seed(0))
    holes = (cut == 0).sum(dim=(1, 2, 3))
    assert (holes > 0).all() and (holes <= 16).all()
    crop = BatchAugment(crop_padding=3, fill=(-9.0,))(torch.zeros(32, 1, 4, 4),
                                                      torch.Generator().manual_seed(0))
    assert set(crop.unique().tolist()) == {-9.0, 0.0}  # padding shows the fill value


def test_standard_augmentation_per_set(tmp_path):
    _write_cifar10(tmp_path)
    s = load_data("cifar10", {"root": str(tmp_path), "verify": False, "cutout": 16})
    assert s.augment.describe() == "crop 4 + flip + cutout 16"
    assert s.augment.fill[0] == pytest.approx(-0.4914 / 0.2470)
    s = load_data("cifar10", {"root": str(tmp_path), "verify": False, "augment": False})
    assert s.augment is None
    assert "augment" not in load_data("digits").describe()


def _nb201():
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    return sp.instantiate(sp.reference("resnet"))


def test_estimator_augments_training_batches_only_and_stays_deterministic():
    seen = []
    base = load_data("digits", {"augment": True, "cutout": 2})

    def spy(x, generator):
        seen.append(x.shape[0])
        return base.augment(x, generator)

    data = dataclasses.replace(base, augment=spy)
    cfg = TrainConfig(epochs=1, data_fraction=0.1, batch_size=32, seed=0)
    r1 = TrainingEstimator(cfg, data=data).estimate(_nb201())
    assert r1.ok, r1.reason
    assert sum(seen) == round(len(base.train) * 0.1)  # each training sample once, no eval
    r2 = TrainingEstimator(cfg, data=data).estimate(_nb201())
    assert r1.loss_curve == r2.loss_curve and r1.val_accuracy == r2.val_accuracy
    plain = TrainingEstimator(cfg, data=load_data("digits")).estimate(_nb201())
    assert plain.loss_curve != r1.loss_curve


def test_holdout_is_stratified_and_exact():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    tr, va = holdout(y, 0.1, seed=0)
    assert len(va) == 10 and sorted(np.bincount(y[va]).tolist()) == [2, 3, 5]
    assert not set(tr) & set(va) and len(tr) + len(va) == 100
    with pytest.raises(DataError):
        holdout(np.array([3]), 0.5, seed=0)


def test_default_root_and_items_do_not_alias_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("NASIR_DATA_DIR", str(tmp_path))
    assert data_root("svhn", None) == tmp_path / "svhn"
    assert data_root("svhn", "here", str(tmp_path)) == tmp_path / "here"
    monkeypatch.delenv("NASIR_DATA_DIR")
    assert str(data_root("mnist", None)).endswith(os.path.join(".cache", "nasir", "data",
                                                               "mnist"))
    ds = ImageTensors(np.zeros((2, 1, 2, 2), np.float32), [0, 1])
    ds[0][0].fill_(5.0)
    assert ds.images.abs().sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_the_gpu_matches_the_cpu():
    x = torch.rand(64, 3, 32, 32)
    aug = BatchAugment(crop_padding=4, flip=True, cutout=16, fill=(-1.0, -2.0, -3.0))
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
