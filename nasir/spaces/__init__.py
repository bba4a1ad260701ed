"""Built-in search spaces, by name.

>>> list(SPACES)[:3]
['nb201', 'mobilenet_v2', 'mnasnet']
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from nasir.errors import SpecError
from nasir.space import Space

__all__ = ["SPACES", "get_space", "list_spaces"]

#: name → module with a ``build(**options) -> Space`` function (imported lazily)
SPACES: dict[str, str] = {
    "nb201": "nasir.spaces.nb201",
    "mobilenet_v2": "nasir.spaces.mobilenet_v2",
    "mnasnet": "nasir.spaces.mnasnet",
    "tiny_mnasnet": "nasir.spaces.tiny_mnasnet",
    "proxylessnas": "nasir.spaces.proxyless",
    "fbnet": "nasir.spaces.fbnet",
    "mobilenet_v3": "nasir.spaces.mobilenet_v3",
    "efficientnet": "nasir.spaces.efficientnet",
    "nasnet": "nasir.spaces.nasnet",
    "pnas": "nasir.spaces.pnas",
    "darts": "nasir.spaces.darts",
    "enas_macro": "nasir.spaces.enas",
    "enas_micro": "nasir.spaces.enas_micro",
    "metaqnn": "nasir.spaces.metaqnn",
    "nasrl": "nasir.spaces.nasrl",
}


@lru_cache(maxsize=64)
def _cached(name: str, items: tuple) -> Space:
    mod = importlib.import_module(SPACES[name])
    return mod.build(**dict(items))


def get_space(name: str, **options: Any) -> Space:
    """Build (and cache) a built-in space; options such as ``input_shape``,
    ``num_classes`` are passed to its ``build``."""
    if name not in SPACES:
        raise SpecError(f"unknown space {name!r}", hint=f"built-in spaces: {', '.join(SPACES)}")
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                         for k, v in options.items()))
    try:
        return _cached(name, items)
    except TypeError as e:
        raise SpecError(f"bad option for space {name}: {e}") from None


def list_spaces() -> list[str]:
    """Names of the built-in spaces."""
    return list(SPACES)
