"""Search cost of the one-shot methods vs training one child for the same epochs.

Space: NB201 on digits (1×8×8, C=8, one cell per stage). Each search runs ``EPOCHS``
epochs over the weight half of the training split (DARTS/FBNet/ProxylessNAS also take an
architecture step per batch on the other half; ENAS adds its controller steps); the
baseline trains the NB201 ResNet reference child for ``EPOCHS`` epochs over the whole
training split with the training estimator, in the same run. The TVM latency table of
FBNet/ProxylessNAS is built once before timing (amortised over searches, as in FBNet) and
its build time is printed apart. Last line: JSON of search / child wall-time ratios.

    .venv/bin/python benchmarks/oneshot.py
"""

from __future__ import annotations

import json
import time

import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.measure import MeasureConfig
from nasir.spaces import get_space
from nasir.strategies.oneshot.common import decision_latency
from nasir.strategies.oneshot.darts import DartsSearch
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

EPOCHS = 4


def main() -> None:
    torch.set_num_threads(1)
    sp = get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=8,
                   cells_per_stage=1)
    t = time.perf_counter()
    r = TrainingEstimator(TrainConfig(epochs=EPOCHS, seed=0)).estimate(
        sp.instantiate(sp.reference("resnet")))
    child_s = time.perf_counter() - t
    print(f"child training ({EPOCHS} epochs, full train split): {child_s:.1f}s "
          f"(val acc {r.val_accuracy:.3f})")
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
                                                latency_rows=rows, target_us=300.0),
    }
    ratios = {}
    print(f"{'method':>13} {'search s':>9} {'child s':>8} {'ratio':>6}")
    for name, make in searches.items():
        t = time.perf_counter()
        res = make().search()
        s = time.perf_counter() - t
        ratios[name] = round(s / child_s, 2)
        print(f"{name:>13} {s:9.1f} {child_s:8.1f} {ratios[name]:6.2f}  "
              f"{res.assignment.text()}", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
