"""Search cost of the one-shot methods vs training one child for the same epochs.

Each method on the space its quality figures use (``benchmarks/oneshot_children.py``):
DARTS and ENAS on NB201 on digits (1×8×8, C=8, one cell per stage), FBNet and
ProxylessNAS on ``tiny_proxyless`` (the per-layer MBConv space at digits size); FBNet and
ProxylessNAS are also timed on NB201 (keys ``fbnet_nb201``, ``proxylessnas_nb201``), and
FBNet's soft mixture (``hard=False``, the paper's form) on ``tiny_proxyless``
(``fbnet_soft``); ``darts_pt_all`` is DARTS with its perturbation selection scored on the
whole architecture half instead of its default 256 images. Each
search runs its default epochs (ENAS 150, the others ``EPOCHS``) over the weight half of
the training split (DARTS and the latency searches: the first 2 epochs train weights only,
then one architecture step per batch on the other half; DARTS adds its perturbation
selection, ENAS its controller steps). The baseline, measured in the same run, trains
``CHILDREN`` uniform random children of the same space for the same number of epochs over
the whole training split with the training estimator (mean per child). Both sides are timed
with ``time.process_time`` (CPU seconds of this process, one torch thread), so other jobs on
a shared machine inflate neither; wall times and the load average are printed beside them.
The TVM latency tables of FBNet/ProxylessNAS are built before timing (amortised over
searches, as in FBNet) and printed apart.

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


def child_cpu(sp, epochs: int) -> float:
    """Mean CPU seconds of training ``CHILDREN`` random children for ``epochs`` epochs."""
    cpu = wall = 0.0
    for a in sample(sp, np.random.default_rng(100), CHILDREN):
        t, w = time.process_time(), time.perf_counter()
        TrainingEstimator(TrainConfig(epochs=epochs, seed=0)).estimate(sp.instantiate(a))
        cpu += time.process_time() - t
        wall += time.perf_counter() - w
    print(f"child training on {sp.name} ({epochs} epochs, full train split, mean of "
          f"{CHILDREN} random children): {cpu / CHILDREN:.2f} CPU s, "
          f"{wall / CHILDREN:.2f} wall s", flush=True)
    return cpu / CHILDREN


def rows_of(sp) -> dict:
    t = time.perf_counter()
    lut = LatencyLUT("runs/oneshot_lut.db", "host",
                     config=MeasureConfig(repeats=5, min_repeat_ms=2))
    rows = {k: v * 1000 for k, v in decision_latency(sp, lut).items()}
    print(f"latency table rows of {sp.name} (TVM host, amortised, not in ratios): "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    digits_splits()  # load the data set once, outside every timing
    nb = get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=8,
                   cells_per_stage=1)
    mb = get_space("tiny_proxyless")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    # ENAS as measured before issue 21 (Adam, 150 epochs; the paper's settings run far more
    # controller children): variant enas_adam keeps these figures comparable
    enas_epochs = EnasSearch(nb, variant="enas_adam").epochs
    base = {(nb.name, EPOCHS): child_cpu(nb, EPOCHS), (nb.name, enas_epochs):
            child_cpu(nb, enas_epochs), (mb.name, EPOCHS): child_cpu(mb, EPOCHS)}
    nb_rows, mb_rows = rows_of(nb), rows_of(mb)
    searches = {
        "enas": (nb, enas_epochs, lambda: EnasSearch(nb, seed=0, variant="enas_adam")),
        "darts": (nb, EPOCHS, lambda: DartsSearch(nb, seed=0, epochs=EPOCHS)),
        "darts_pt_all": (nb, EPOCHS, lambda: DartsSearch(nb, seed=0, epochs=EPOCHS,
                                                         pt_images=None)),
        "fbnet": (mb, EPOCHS, lambda: FBNetSearch(mb, seed=0, epochs=EPOCHS,
                                                  latency_rows=mb_rows)),
        "fbnet_soft": (mb, EPOCHS, lambda: FBNetSearch(mb, seed=0, epochs=EPOCHS,
                                                       latency_rows=mb_rows, hard=False)),
        "proxylessnas": (mb, EPOCHS, lambda: ProxylessSearch(
            mb, seed=0, epochs=EPOCHS, latency_rows=mb_rows, target_us=1000.0)),
        "fbnet_nb201": (nb, EPOCHS, lambda: FBNetSearch(nb, seed=0, epochs=EPOCHS,
                                                        latency_rows=nb_rows)),
        "proxylessnas_nb201": (nb, EPOCHS, lambda: ProxylessSearch(
            nb, seed=0, epochs=EPOCHS, latency_rows=nb_rows, target_us=1000.0)),
    }
    ratios = {}
    print(f"{'method':>18} {'space':>14} {'epochs':>6} {'search cpu':>10} {'child cpu':>9} "
          f"{'ratio':>6} {'search wall':>11} {'load':>5}")
    for name, (sp, epochs, make) in searches.items():
        t, w = time.process_time(), time.perf_counter()
        res = make().search()
        s, sw = time.process_time() - t, time.perf_counter() - w
        c = base[(sp.name, epochs)]
        ratios[name] = round(s / c, 2)
        print(f"{name:>18} {sp.name:>14} {epochs:6d} {s:10.2f} {c:9.2f} {ratios[name]:6.2f} "
              f"{sw:11.2f} {os.getloadavg()[0]:5.2f}  {res.assignment.text()}", flush=True)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
