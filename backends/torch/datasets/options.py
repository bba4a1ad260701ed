"""Data set specs and their options: parsed and checked without reading any file.

A spec names a standard set (``cifar10``), or has a form: ``npz:PATH``,
``imagefolder:PATH``, ``module:function`` or ``path/to/file.py:function``. Each kind has
a pydantic model of its options (unknown keys are refused); :func:`parse_options` turns a
bad option into one :class:`DataError` line.

>>> parse_spec("CIFAR-10").name, parse_spec("npz:data/x.npz").kind
('cifar10', 'npz')
>>> parse_options(parse_spec("mnist"), {"download": True}).download
True
>>> try:
...     parse_options(parse_spec("mnist"), {"cutoff": 8})
... except DataError as e:
...     print(e)  # doctest: +ELLIPSIS
unknown data option 'cutoff' for data set mnist; valid options: augment, crop_padding, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nasir.errors import NasirError

__all__ = [
    "DATASETS",
    "FORMS",
    "DataError",
    "DataSpec",
    "DigitsOptions",
    "FolderOptions",
    "ModuleOptions",
    "NpzOptions",
    "PublishedOptions",
    "parse_options",
    "parse_spec",
]

#: the standard data sets, by name
DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
#: the other forms a data spec can take
FORMS: tuple[str, ...] = ("npz:PATH", "imagefolder:PATH", "module:function",
                          "path/to/file.py:function")

Kind = Literal["digits", "published", "npz", "imagefolder", "module"]

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_FUNCTION = re.compile(r"[A-Za-z_]\w*")


class DataError(NasirError):
    """A data set is named, configured or stored wrongly (missing or corrupt files)."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its ``kind``, canonical ``name`` and ``target`` (a path, a
    ``module:function`` or the set's name)."""

    kind: Kind
    name: str
    target: str


def _valid() -> str:
    return f"valid: {', '.join(DATASETS)}, or {', '.join(FORMS)}"


def parse_spec(spec: str) -> DataSpec:
    """Parse a data spec (names are case-insensitive; ``-`` works as ``_``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"no data set given ({spec!r}); {_valid()}")
    text = spec.strip()
    alias = text.lower().replace("-", "_")
    alias = {"cifar_10": "cifar10", "cifar_100": "cifar100", "fashionmnist": "fashion_mnist"
             }.get(alias, alias)
    if alias in DATASETS:
        return DataSpec("digits" if alias == "digits" else "published", alias, alias)
    for prefix in ("npz", "imagefolder"):
        if text.lower().startswith(prefix + ":"):
            path = text[len(prefix) + 1:].strip()
            if not path:
                raise DataError(f"data set {text!r} names no path; write {prefix}:PATH")
            return DataSpec(prefix, f"{prefix}:{path}", path)
    if ":" in text:
        where, _, func = text.rpartition(":")
        if not _FUNCTION.fullmatch(func) or not (
                where.endswith(".py") or _MODULE.fullmatch(where)):
            raise DataError(f"bad data set {text!r}: expected module:function or "
                            f"path/to/file.py:function; {_valid()}")
        return DataSpec("module", text, text)
    raise DataError(f"unknown data set {text!r}; {_valid()}")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: crop / flip on training batches (None: the set's standard, on for CIFAR and SVHN)
    augment: bool | None = None
    #: padding of the random crop (None: H/8 rounded, 4 for 32×32 and 28×28 images)
    crop_padding: int | None = Field(default=None, ge=0)
    #: horizontal flips (None: the set's standard, on for CIFAR only)
    flip: bool | None = None
    #: side of the cutout square in pixels (0: off; independent of ``augment``)
    cutout: int = Field(default=0, ge=0)


class _Split(_Options):
    #: share of the training data held out for validation (seeded, stratified)
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)


class DigitsOptions(_Options):
    """Options of ``digits`` (its own fixed split: 60 / 20 / 20 per class)."""


class PublishedOptions(_Split):
    """Options of the published sets (``cifar10`` … ``svhn``)."""

    #: folder of the files (default ``$NASIR_DATA_DIR/<name>``, else
    #: ``~/.cache/nasir/data/<name>``); relative to the experiment's folder
    root: str | None = None
    #: fetch missing files from their official URLs
    download: bool = False
    #: check MD5 sums of the files (archives and extracted files)
    verify: bool = True
    #: subtract the set's published channel mean and divide by its std
    normalize: bool = True


class NpzOptions(_Split):
    """Options of ``npz:PATH``."""

    #: per-channel mean / std of the training split
    normalize: bool = False
    #: ``x`` is N×H×W×C (True) or N×C×H×W (False); None: guess (see the package docs)
    channels_last_input: bool | None = None
    #: number of classes (None: largest label + 1)
    num_classes: int | None = Field(default=None, ge=1)


class FolderOptions(_Split):
    """Options of ``imagefolder:PATH``."""

    #: resize every image to size×size (needed when the images differ in size)
    size: int | None = Field(default=None, ge=1)
    #: one grey channel (True), RGB (False), or grey when every image is (None)
    grayscale: bool | None = None
    #: per-channel mean / std of the training split
    normalize: bool = False
    #: share held out as a test split when the folder has no train/ sub-folder
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)


class ModuleOptions(_Split):
    """Options of ``module:function``: ``kwargs`` are passed to the function."""

    kwargs: dict[str, Any] = Field(default_factory=dict)


_MODELS: dict[str, type[_Options]] = {"digits": DigitsOptions, "published": PublishedOptions,
                                      "npz": NpzOptions, "imagefolder": FolderOptions,
                                      "module": ModuleOptions}


def parse_options(spec: DataSpec, options: Mapping[str, Any] | None) -> Any:
    """The validated options model of ``spec``'s kind (one-line :class:`DataError`)."""
    model = _MODELS[spec.kind]
    if options is not None and not isinstance(options, Mapping):
        raise DataError(f"data options for {spec.name} must be a table of key = value, "
                        f"got {type(options).__name__}")
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        valid = ", ".join(sorted(model.model_fields))
        if err["type"] == "extra_forbidden":
            raise DataError(f"unknown data option {key!r} for data set {spec.name}; "
                            f"valid options: {valid}") from None
        raise DataError(f"bad data option {key}={err.get('input')!r} for data set "
                        f"{spec.name}: {err['msg']}; valid options: {valid}") from None
