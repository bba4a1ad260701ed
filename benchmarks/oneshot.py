"""Search cost of the one-shot methods vs training one child for the same epochs.

Space: NB201 on digits (1×8×8, C=8, one cell per stage). Each search runs ``EPOCHS``
epochs over the weight half of the training split with its default settings (DARTS and the
latency searches: the first 2 epochs train weights only, then one architecture step per
batch on the other half; DARTS adds its perturbation selection, ENAS its controller steps).
The baseline, measured in the same run, trains ``CHILDREN`` uniform random children of the
space for ``EPOCHS`` epochs over the whole training split with the training estimator
(mean per child). Both sides are timed with ``time.process_time`` (CPU seconds of this
process, one torch thread), so other jobs on a shared machine inflate neither; wall times
and the load average are printed beside them. The TVM latency table of FBNet/ProxylessNAS
is built before timing (amortised over searches, as in FBNet) and printed apart.

    .venv/bin/python benchmarks/oneshot.py

Last line: JSON of search / child CPU-time ratios.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from nasir.backends.torch.data import digits_splits
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.measure import MeasureConfig
from nasir.passes.sampling import sample
from nasir.spaces import get_space
from nasir.strategies.oneshot.common import decision_latency
from nasir.strategies.oneshot.darts import DartsSearch
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

EPOCHS = 8
CHILDREN = 3


def main() -> None:
    torch.set_num_threads(1)
    digits_splits()  # load the data set once, outside every timing
    sp = get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=8,
                   cells_per_stage=1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    cpu = wall = 0.0
    for a in sample(sp, np.random.default_rng(100), CHILDREN):
        t, w = time.process_time(), time.perf_counter()
        TrainingEstimator(TrainConfig(epochs=EPOCHS, seed=0)).estimate(sp.instantiate(a))
        cpu += time.process_time() - t
        wall += time.perf_counter() - w
    child_cpu, child_wall = cpu / CHILDREN, wall / CHILDREN
    print(f"child training ({EPOCHS} epochs, full train split, mean of {CHILDREN} random "
          f"children): {child_cpu:.2f} CPU s, {child_wall:.2f} wall s")
    t = time.perf_counter()
    lut = LatencyLUT("runs/oneshot_lut.db", "host",
                     config=MeasureConfig(repeats=5, min_repeat_ms=2))
    rows = {k: v * 1000 for k, v in decision_latency(sp, lut).items()}
    print(f"latency table rows (TVM host, amortised, not in ratios): "
          f"{time.perf_counter() - t:.1f}s")
    searches = {
        "enas": lambda: EnasSearch(sp, seed=0, epochs=EPOCHS),
        "darts": lambda: DartsSearch(sp, seed=0, epochs=EPOCHS),
        "fbnet": lambda: FBNetSearch(sp, seed=0, epochs=EPOCHS, latency_rows=rows),
        "proxylessnas": lambda: ProxylessSearch(sp, seed=0, epochs=EPOCHS,
                                                latency_rows=rows, target_us=1000.0),
    }
    ratios = {}
    print(f"{'method':>13} {'search cpu':>10} {'child cpu':>9} {'ratio':>6} "
          f"{'search wall':>11} {'load':>5}")
    for name, make in searches.items():
        t, w = time.process_time(), time.perf_counter()
        res = make().search()
        s, sw = time.process_time() - t, time.perf_counter() - w
        ratios[name] = round(s / child_cpu, 2)
        print(f"{name:>13} {s:10.2f} {child_cpu:9.2f} {ratios[name]:6.2f} {sw:11.2f} "
              f"{os.getloadavg()[0]:5.2f}  {res.assignment.text()}", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
