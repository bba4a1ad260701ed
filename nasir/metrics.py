"""Metric values as numbers: what counts as a usable measurement.

>>> finite("0.5"), finite(float("nan")), finite(None), finite("fast")
(0.5, None, None, None)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite"]


def finite(v: Any) -> float | None:
    """``v`` as a finite float, or ``None`` (missing, not a number, NaN or infinite)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
