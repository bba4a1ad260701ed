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

__all__ = ["SPACES", "get_reference", "get_space", "list_spaces", "reference_names",
           "reference_options"]

#: name → module with a ``build(**options) -> Space`` function (imported lazily)
SPACES: dict[str, str] = {
    "nb201": "nasir.spaces.nb201",
    "mobilenet_v2": "nasir.spaces.mobilenet_v2",
    "mnasnet": "nasir.spaces.mnasnet",
    "tiny_mnasnet": "nasir.spaces.tiny_mnasnet",
    "proxylessnas": "nasir.spaces.proxyless",
    "tiny_proxyless": "nasir.spaces.tiny_proxyless",
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


def reference_options(name: str) -> dict[str, dict[str, Any]]:
    """Build options under which a space's named references reproduce their papers.

    A space module may define ``REFERENCE_OPTIONS`` (reference name -> ``build`` options),
    e.g. AmoebaNet-A's ``filters=50`` in the NASNet space. A reference listed there that the
    default build cannot express (ENAS's 24-layer macro network) exists only in that build.

    >>> reference_options("nasnet")["amoebanet_a"]
    {'filters': 50}
    """
    if name not in SPACES:
        raise SpecError(f"unknown space {name!r}", hint=f"built-in spaces: {', '.join(SPACES)}")
    mod = importlib.import_module(SPACES[name])
    return {k: dict(v) for k, v in getattr(mod, "REFERENCE_OPTIONS", {}).items()}


def reference_names(name: str) -> list[str]:
    """Every named reference of a space: the default build's, then those that need options."""
    names = list(get_space(name).references)
    return names + [r for r in reference_options(name) if r not in names]


def get_reference(name: str, ref: str, **options: Any) -> tuple[Space, Any]:
    """``(space, assignment)`` of reference ``ref``, the space built with the reference's
    own options (see :func:`reference_options`) updated by ``options``.

    >>> sp, a = get_reference("nasnet", "amoebanet_a", input_shape=(3, 32, 32))
    >>> sp.meta["macro"]["filters"], a["normal_b0_op_a"]
    (50, 'avg_pool_3x3')
    """
    opts = {**reference_options(name).get(ref, {}), **options}
    sp = get_space(name, **opts)
    return sp, sp.reference(ref)
