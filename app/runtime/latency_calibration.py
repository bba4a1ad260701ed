"""The run's correction from table latency to measured latency (``latency.policy`` auto).

>>> c = Calibration()
>>> c.predict(2.0), c.fit([(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]), round(c.predict(4.0), 6)
(2.0, True, 8.0)
>>> c.fit([(1.0, 3.0)]), c.slope, c.intercept
(True, 3.0, 0.0)
>>> _ = c.fit([(0.1, 0.2), (0.2, 0.3), (10.0, 11.0), (20.0, 19.0)])  # relative errors weigh
>>> [abs(c.predict(x) / y - 1) < 0.01 for x, y in [(0.1, 0.2), (0.2, 0.3)]]  # OLS: 134 %, 88 %
[True, True]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Calibration"]


class Calibration:
    """Table latency → measured latency, refit from ``(table_ms, measured_ms)`` pairs.

    Three points or more: ``a · table + b`` fitted by least *relative* squares (each
    residual divided by its measured latency, so a 40 µs network's 4 µs miss counts as much
    as a 4 ms network's 0.4 ms one: what a latency's reward and the table's MAPE weigh; kept
    when ``a > 0``); fewer, or a fit that would invert the ranking: the median ratio
    ``measured / table``; none: the identity. ``refits`` counts fits.
    """

    def __init__(self) -> None:
        self.slope, self.intercept, self.points, self.refits = 1.0, 0.0, 0, 0

    def fit(self, pairs: Sequence[tuple[float, float]]) -> bool:
        """Refit on ``pairs``; returns whether there was anything to fit."""
        pts = [(float(x), float(y)) for x, y in pairs
               if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
        if not pts:
            return False
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        a, b = float(np.median(y / x)), 0.0
        if len(pts) >= 3 and float(np.ptp(x)) > 0:
            fa, fb = np.polyfit(x, y, 1, w=1.0 / y)
            if fa > 0:
                a, b = float(fa), float(fb)
        self.slope, self.intercept, self.points = a, b, len(pts)
        self.refits += 1
        return True

    def predict(self, table_ms: float) -> float:
        """The calibrated latency (never below a hundredth of the table's)."""
        return max(self.slope * float(table_ms) + self.intercept, 0.01 * float(table_ms))

    def state(self) -> dict[str, Any]:
        """What the store keeps (``latency.calibration``)."""
        return {"slope": self.slope, "intercept": self.intercept, "points": self.points,
                "refits": self.refits}
