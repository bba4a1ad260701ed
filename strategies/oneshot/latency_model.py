"""The additive per-layer latency model of the latency-aware one-shot searches (FBNet,
ProxylessNAS, NetAdapt): per-decision rows from a TVM latency table, their sum, and an affine
calibration against whole networks measured with TVM
(:mod:`~nasir.strategies.oneshot.common` re-exports them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.space import Space

__all__ = ["DEFAULT_LUT_PATH", "LatencyCalibration", "additive_latency", "calibrate_rows",
           "decision_latency", "expected_table", "latency_function", "tvm_measure_us"]


#: where one-shot searches keep their per-layer latency table when given none
DEFAULT_LUT_PATH = "runs/oneshot_lut.db"


def latency_function(latency_fn: Callable[[Any], float] | None, lut: Any
                     ) -> tuple[Callable[[Any], float], str]:
    """``(function, source)``: ``latency_fn`` when given (``"latency_fn"``), else the
    ``predict`` of ``lut`` — a host :class:`~nasir.backends.tvm.lut.LatencyLUT` at
    :data:`DEFAULT_LUT_PATH` when ``lut`` is ``None`` (``"lut"``)."""
    if latency_fn is not None:
        return latency_fn, "latency_fn"
    if lut is None:
        from nasir.backends.tvm.lut import LatencyLUT

        lut = LatencyLUT(DEFAULT_LUT_PATH, "host")
    return lut.predict, "lut"


def decision_latency(space: Space, lut: Any, fixed: Mapping[str, Any] | None = None
                     ) -> dict[str, np.ndarray]:
    """Per free decision, the latency (ms) each option adds, from a TVM latency table.

    Additive model (FBNet/ProxylessNAS): the latency of an assignment is the base
    network's plus, per decision, the difference its option makes to the base (the first
    option of every free decision, ``fixed`` for the pinned ones). The base's own sum is
    spread evenly over the decisions and the LUT's calibration constant is added to it.
    Layers not yet in the table are compiled and measured on the host (slow once).
    """
    fixed = dict(fixed or {})
    free = [d for d in space.decisions if d.label not in fixed]
    base = {d.label: d.options[0] for d in free} | fixed
    base_ms = lut.layer_sum(space.instantiate(space.check(base)))
    out: dict[str, np.ndarray] = {}
    share = (base_ms + lut.constant_ms) / max(1, len(free))
    for d in free:
        row = np.zeros(d.size)
        for i, o in enumerate(d.options):
            if i == 0:
                row[i] = share
                continue
            try:
                ms = lut.layer_sum(space.instantiate(space.check(base | {d.label: o})))
            except Exception:  # an option that does not verify here: never pick it
                ms = float("inf")
            row[i] = share + ms - base_ms
        out[d.label] = row
    return out


def expected_table(space: Space, rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows of :func:`decision_latency` as a ``decisions × max options`` array (0 pad)."""
    labels = [d.label for d in space.decisions if d.label in rows]
    width = max(len(rows[lb]) for lb in labels)
    t = np.zeros((len(labels), width))
    for k, lb in enumerate(labels):
        t[k, :len(rows[lb])] = rows[lb]
    return t


@dataclass
class LatencyCalibration:
    """An affine correction ``measured ≈ scale · additive + offset`` (µs) of the additive
    per-layer latency model, fitted on whole networks compiled and measured with TVM."""

    scale: float
    offset: float
    points: list[tuple[float, float]] = field(default_factory=list)

    def apply(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows whose sum over decisions is the calibrated whole-network latency."""
        n = max(1, len(rows))
        return {k: self.scale * np.asarray(v, dtype=np.float64) + self.offset / n
                for k, v in rows.items()}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"scale": self.scale, "offset": self.offset,
                "points": [list(p) for p in self.points]}


def additive_latency(space: Space, rows: Mapping[str, np.ndarray],
                     assignment: Mapping[str, Any]) -> float:
    """Sum over decisions of the row entry of the chosen option."""
    return float(sum(rows[d.label][d.index(assignment[d.label])] for d in space.decisions
                     if d.label in rows and d.label in assignment))


def calibrate_rows(space: Space, rows: Mapping[str, np.ndarray],
                   measure_us: Callable[[Mapping[str, Any]], float], *, children: int = 6,
                   seed: int = 0, fixed: Mapping[str, Any] | None = None
                   ) -> LatencyCalibration:
    """Fit ``measured = scale · additive + offset`` on ``children`` whole networks.

    The children are the two extremes of the additive model (cheapest and dearest option
    everywhere) plus random ones; ``measure_us(assignment)`` compiles and measures one
    (TVM, host). Least squares; if the slope comes out non-positive (measurement noise on
    a flat space) a pure ratio fit is used instead.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    >>> rows = {d.label: np.array([1.0, 1.0, 5.0, 9.0, 2.0]) for d in sp.decisions}
    >>> fake = lambda a: 0.25 * additive_latency(sp, rows, a) + 30.0
    >>> c = calibrate_rows(sp, rows, fake, children=4)
    >>> round(c.scale, 3), round(c.offset, 1)
    (0.25, 30.0)
    >>> round(additive_latency(sp, c.apply(rows), sp.reference("resnet")), 3) == \\
    ...     round(fake(sp.reference("resnet")), 3)
    True
    """
    from nasir.passes.sampling import sample

    if children < 2:
        raise SpecError(f"calibration needs >= 2 children, got {children}")
    fixed = dict(fixed or {})
    free = [d for d in space.decisions if d.label in rows and d.label not in fixed]
    lo = {d.label: d.options[int(np.argmin(rows[d.label]))] for d in free} | fixed
    hi = {d.label: d.options[int(np.argmax(rows[d.label]))] for d in free} | fixed
    picks: list[dict[str, Any]] = [lo, hi]
    rng = np.random.default_rng(seed)
    tries = 0
    while len(picks) < children and tries < 50 * children:
        tries += 1
        a = dict(sample(space, rng, 1)[0]) | fixed
        if a not in picks:
            picks.append(a)
    points = []
    for a in picks:
        a = dict(space.check(a))
        points.append((additive_latency(space, rows, a), float(measure_us(a))))
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    if np.ptp(x) > 0:
        scale, offset = (float(v) for v in np.polyfit(x, y, 1))
    else:
        scale, offset = 0.0, 0.0
    if not scale > 0:
        scale, offset = float(y.sum() / max(x.sum(), 1e-12)), 0.0
    return LatencyCalibration(scale, offset, points)


def tvm_measure_us(space: Space, config: Any = None) -> Callable[[Mapping[str, Any]], float]:
    """``assignment -> µs``: compile the child with TVM and measure it on the host."""
    from nasir.backends.tvm.measure import MeasureConfig, measure

    cfg = config or MeasureConfig(repeats=7, min_repeat_ms=5)

    def run(a: Mapping[str, Any]) -> float:
        r = measure(space.instantiate(space.check(a)), "host", cfg)
        if r.median_ms is None:
            raise SpecError(f"TVM could not measure {dict(a)}: {r.reason}")
        return float(r.median_ms) * 1000.0

    return run
