"""nasir: neural architecture search built like a compiler.

The search runner from Python: :func:`optimize` (your space, your data, your objective).
Everything else lives in the subpackages (``nasir.dsl``, ``nasir.spaces``, ``nasir.passes``,
``nasir.backends``, ``nasir.strategies``, ``nasir.runtime``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["optimize"]


def __getattr__(name: str) -> Any:  # lazy: ``import nasir`` stays light
    if name == "optimize":
        from nasir.runtime.optimize import optimize

        return optimize
    raise AttributeError(f"module 'nasir' has no attribute {name!r}")
