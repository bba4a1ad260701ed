"""Data sets for training: the standard image sets, your files, or your own function.

:func:`load_data` turns a data spec and its options into
:class:`~nasir.backends.torch.data.DataSplits` (train / val / test datasets, input shape
``(C, H, W)``, class count, training augmentation, name); :func:`check_data_options`
checks a spec and its options without reading any file.

>>> s = load_data("digits", {"augment": True})
>>> s.describe()
'digits: 1079 train / 359 val / 359 test, 1×8×8, 10 classes, augment: crop 1'
>>> check_data_options("cifar10", {"cutout": 16, "download": True})
>>> try:
...     check_data_options("cifar10", {"cutout": -1})
... except DataError as e:
...     print(e)  # doctest: +ELLIPSIS
bad data option cutout=-1 for data set cifar10: Input should be greater than or equal to 0; ...

Specs
-----
``digits`` (the default)
    scikit-learn's 1,797 8×8 digits, shipped with it (never downloaded), with its own
    fixed stratified 60/20/20 split (``seed`` picks it), scaled to [0, 1].
``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``svhn``
    read from the publishers' own files, never unpickled, under ``root`` (default
    ``$NASIR_DATA_DIR/<name>``, else ``~/.cache/nasir/data/<name>``):

    - cifar10: ``cifar-10-batches-bin/data_batch_{1..5}.bin``, ``test_batch.bin``, or the
      archive ``cifar-10-binary.tar.gz`` (unpacked there);
    - cifar100: ``cifar-100-binary/train.bin``, ``test.bin`` (fine labels), or
      ``cifar-100-binary.tar.gz``;
    - mnist, fashion_mnist: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
      ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``;
    - svhn: ``train_32x32.mat``, ``test_32x32.mat`` (label 10 is the digit 0).

    Missing files raise one :class:`DataError` line naming them and the folder;
    ``download=true`` fetches them from the official URLs. MD5 sums of archives and files
    are checked (``verify=false`` skips that). Images are normalised with the set's
    published channel mean / std (``normalize``).
``npz:PATH``
    arrays ``x``, ``y`` and optionally ``x_val``, ``y_val`` and ``x_test``, ``y_test``
    (read without pickle). ``x`` is N×C×H×W, or N×H×W (one channel is added), or N×H×W×C
    when its last dimension is 1 or 3 and its second is not (``channels_last_input``
    decides when that guess is wrong). uint8 images are scaled to [0, 1]; other numbers
    are used as they are. Labels are integers of any width, 0..K-1 as given (not
    remapped; negative labels are refused); K is the largest label + 1 unless
    ``num_classes`` says more.
``imagefolder:PATH``
    ``PATH/train/<class>/*.png|jpg|…`` with optional ``PATH/val/<class>/…`` and
    ``PATH/test/<class>/…``, or ``PATH/<class>/…`` (``test_fraction`` holds out a test
    split). Classes are the sorted training folder names, labels their positions. Images
    of different sizes need ``size`` (resize to size×size); ``grayscale`` picks one grey
    channel or RGB (default: grey only when every image is).
``module:function``, ``path/to/file.py:function``
    your function, called with the ``kwargs`` option; see
    :mod:`nasir.backends.torch.datasets.pyfunc` for what it may return.

Rules for all: ``PATH`` (and ``root``) are relative to ``base_dir`` (the experiment
file's folder) when given, else the working folder. Validation data are held out of the
training data (``val_fraction``, default 0.1, stratified by class, seeded by ``seed``)
unless the data bring their own (``x_val``, ``val/``, a returned ``val``); the official
test split goes to ``DataSplits.test`` and is only for final reports. Parsed files are
cached per process by path, size and modification time.

Augmentation (training batches only, on their device, seeded by the run): ``augment``
turns on a random crop after padding by ``crop_padding`` pixels (default H/8: 4 for
CIFAR, SVHN and MNIST, 1 for digits) and, where ``flip`` is on, horizontal flips. By
default it is on for CIFAR (crop + flip) and SVHN (crop, no flip) and off elsewhere;
flips are on by default for CIFAR only. ``cutout=L`` (0: off) blanks an L×L square
whatever ``augment`` says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nasir.backends.torch.data import DataSplits, digits_splits
from nasir.backends.torch.datasets.augment import BatchAugment
from nasir.backends.torch.datasets.local import load_imagefolder, load_npz, resolve
from nasir.backends.torch.datasets.options import (
    DATASETS,
    FORMS,
    DataError,
    DataSpec,
    parse_options,
    parse_spec,
)
from nasir.backends.torch.datasets.published import PUBLISHED, data_root, load_published
from nasir.backends.torch.datasets.pyfunc import load_callable
from nasir.backends.torch.datasets.tensors import ImageTensors, make_augment

__all__ = [
    "DATASETS",
    "FORMS",
    "PUBLISHED",
    "BatchAugment",
    "DataError",
    "DataSpec",
    "ImageTensors",
    "check_data_options",
    "data_root",
    "load_data",
]


def check_data_options(spec: str, options: Mapping[str, Any] | None) -> None:
    """Check a data spec and its options without reading any file.

    Raises :class:`DataError` (a :class:`~nasir.errors.NasirError`) in one line: an
    unknown name lists the valid names and forms; a bad option names the option, the data
    set and the valid options.

    >>> check_data_options("npz:train.npz", {"val_fraction": 0.2})
    >>> try:
    ...     check_data_options("imagenet", None)
    ... except DataError as e:
    ...     print(e)
    unknown data set 'imagenet'; valid: digits, cifar10, cifar100, mnist, fashion_mnist, \
svhn, or npz:PATH, imagefolder:PATH, module:function, path/to/file.py:function
    """
    parse_options(parse_spec(spec), options)


def load_data(spec: str, options: Mapping[str, Any] | None = None, *,
              base_dir: str | None = None, seed: int = 0) -> DataSplits:
    """The :class:`~nasir.backends.torch.data.DataSplits` of a data spec (see the module
    docstring for the specs, options and rules).

    ``seed`` picks the validation hold-out (and digits' split); ``base_dir`` is where
    relative paths start (the experiment file's folder).

    >>> s = load_data("digits", seed=1)
    >>> s.name, s.input_shape, s.num_classes, s.augment is None
    ('digits', (1, 8, 8), 10, True)
    """
    ds = parse_spec(spec)
    opts = parse_options(ds, options)
    if ds.kind == "digits":
        s = digits_splits(seed=seed)
        return dataclasses.replace(s, augment=make_augment(opts, s.input_shape))
    if ds.kind == "published":
        return load_published(ds.name, opts, base_dir=base_dir, seed=seed)
    if ds.kind == "npz":
        return load_npz(resolve(ds.target, base_dir), opts, seed=seed, name=ds.name)
    if ds.kind == "imagefolder":
        return load_imagefolder(resolve(ds.target, base_dir), opts, seed=seed, name=ds.name)
    return load_callable(ds.target, opts, base_dir=base_dir, seed=seed)

