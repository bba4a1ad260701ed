"""The NAS-Bench-201 CIFAR-10 table shipped by ``analog-nasbench`` (AnalogNAS-Bench, IBM).

The package's data file is a pickle. nasir never unpickles it generally: a restricted
unpickler admits exactly its two record classes (mapped to inert local classes) and
refuses every other global, so a crafted file cannot run code.

Its 6-tuples list the edges 0→1, 0→2, 0→3, 1→2, 1→3, 2→3 (NASLib's order) with op codes
0 = skip_connect, 1 = none, 2 = nor_conv_3x3, 3 = nor_conv_1x1, 4 = avg_pool_3x3.
``baseline_accuracy`` is CIFAR-10 test accuracy (%) after 200 epochs.

>>> t = NB201Table.load()
>>> len(t), round(t.optimum, 2)
(15625, 94.07)
>>> from nasir.spaces import get_space
>>> round(t.accuracy(get_space("nb201").reference("resnet")), 2), t.queries
(86.32, 1)
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from nasir.errors import NasirError, ParseError

__all__ = ["CODE_OPS", "NASLIB_EDGES", "NB201Table", "SafeUnpickler", "table_path"]

#: edge order of the package's tuples
NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
#: op code → NB201 op name
CODE_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
_OP_CODE = {op: k for k, op in enumerate(CODE_OPS)}


class _Record:
    """Inert stand-in for the package's record classes (attributes only)."""


class _Architecture(_Record):
    pass


class _DriftMeasurement(_Record):
    pass


_ALLOWED = {
    ("analognasbench.data", "Architecture"): _Architecture,
    ("analognasbench.data", "DriftMeasurement"): _DriftMeasurement,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that admits only the benchmark's two record classes."""

    def find_class(self, module: str, name: str) -> Any:
        cls = _ALLOWED.get((module, name))
        if cls is None:
            raise ParseError(f"refusing to unpickle {module}.{name}",
                             hint="only the NB201 table's record classes are allowed")
        return cls


def table_path() -> str:
    """Path of the installed data file (found without importing the package)."""
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        raise NasirError("the analog-nasbench package is not installed",
                         hint="pip install analog-nasbench")
    return os.path.join(next(iter(spec.submodule_search_locations)), "data.anb")


def _arch_key(a: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(_OP_CODE[a[f"edge_{j}_{i}"]] for j, i in NASLIB_EDGES)


class NB201Table:
    """Lookup of CIFAR-10 accuracy (%) by NB201 assignment, with query counting."""

    _cache: NB201Table | None = None

    def __init__(self, acc: dict[tuple[int, ...], float]) -> None:
        self._acc = acc
        self.queries = 0
        self.optimum = max(acc.values())

    @classmethod
    def load(cls, path: str | None = None) -> NB201Table:
        """Read the table (cached for the default path)."""
        if path is None and cls._cache is not None:
            return cls._cache.fresh()
        with open(path or table_path(), "rb") as f:
            raw = f.read()
        try:
            data = SafeUnpickler(io.BytesIO(raw)).load()
        except ParseError:
            raise
        except Exception as e:  # any malformed pickle is a parse error
            raise ParseError(f"cannot read the NB201 table: {e}") from None
        if not isinstance(data, dict):
            raise ParseError("the NB201 table is not a mapping")
        acc = {}
        for key, rec in data.items():
            if not (isinstance(key, tuple) and len(key) == 6):
                raise ParseError(f"bad NB201 table key {key!r}")
            acc[tuple(int(k) for k in key)] = float(rec.__dict__["baseline_accuracy"])
        table = cls(acc)
        if path is None:
            cls._cache = table
            return table.fresh()
        return table

    def fresh(self) -> NB201Table:
        """A view sharing the data with its own query counter."""
        return NB201Table(self._acc)

    def __len__(self) -> int:
        return len(self._acc)

    def accuracy(self, a: Mapping[str, Any]) -> float:
        """CIFAR-10 test accuracy (%) of assignment ``a``; counts one query."""
        self.queries += 1
        return self._acc[_arch_key(a)]

    def peek(self, a: Mapping[str, Any]) -> float:
        """Accuracy without counting a query (for reporting regret, not for search)."""
        return self._acc[_arch_key(a)]

    def all_accuracies(self) -> np.ndarray:
        """Every accuracy in the table."""
        return np.fromiter(self._acc.values(), dtype=float)
