"""The pass registry: pass name → ``"module:Class"``, imported only when a pass is asked for.

It sits below :mod:`nasir.passes.base` (which re-exports it) and
:mod:`nasir.passes.context` (which checks disabled pass names against it), so neither has
to import the other back.

>>> get_pass("canonicalize").__name__
'CanonicalizePass'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nasir.errors import PassError

if TYPE_CHECKING:
    from nasir.passes.base import Pass

__all__ = ["PASSES", "get_pass", "register_pass"]

#: name → "module:Class"; modules are imported only when a pass is asked for
PASSES: dict[str, str] = {
    "verify": "nasir.passes.verify:VerifyPass",
    "infer-shapes": "nasir.passes.verify:InferShapesPass",
    "expand-composites": "nasir.passes.expand:ExpandCompositesPass",
    "count-params": "nasir.passes.analysis:CountParamsPass",
    "count-macs": "nasir.passes.analysis:CountMacsPass",
    "activation-memory": "nasir.passes.analysis:ActivationMemoryPass",
    "canonicalize": "nasir.passes.canonicalize:CanonicalizePass",
    "hash": "nasir.passes.hashing:HashPass",
    "connectivity": "nasir.passes.connectivity:ConnectivityPass",
}


def register_pass(name: str, target: str) -> None:
    """Register a pass class by ``"module:Class"`` without importing it."""
    PASSES[name] = target


def get_pass(name: str) -> type[Pass]:
    """Import and return the pass class called ``name``."""
    try:
        target = PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}",
                        hint=f"known passes: {', '.join(sorted(PASSES))}") from None
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)
