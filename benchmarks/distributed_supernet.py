"""Data-parallel supernet epochs (issue 22): one process vs N processes (gloo, CPU).

DARTS first order on digits (NB201 supernet), the same seed and global batches: the
1-process job (``--threads`` torch threads) against :class:`DataParallelJob` with
``--workers`` ranks (one thread each, ``cpu_count // workers``). Per epoch: wall time
(spawn + rebuild + train for the ranks; ``train_s`` is the ranks' own training time),
loss, and at the end the max differences of the loss curves and of the final weights.
Ends with one JSON line.

    .venv/bin/python benchmarks/distributed_supernet.py --epochs 2 --workers 2

On a 2-core machine the ranks add communication (a BatchNorm all-reduce per layer per
forward and one per backward, two gradient all-reduces a step) and start-up (each epoch
spawns and rebuilds); the figure says what data parallelism costs and gains here, not on
N GPUs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Any

from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.oneshot.data_parallel import DataParallelJob


def build(channels: int, cells: int, opts: dict[str, Any]) -> Any:
    """The DARTS first-order job on digits (what every rank rebuilds)."""
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=channels, cells_per_stage=cells)
    return make_strategy("darts_first_order", sp, seed=0, **opts).job()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data-fraction", type=float, default=1.0)
    a = ap.parse_args()
    opts = {"epochs": a.epochs, "batch_size": a.batch_size, "data_fraction": a.data_fraction}
    rebuild = functools.partial(build, a.channels, a.cells, opts)
    load0 = os.getloadavg()[0]

    one = rebuild()
    one_rows = []
    for _ in range(a.epochs):
        t = time.perf_counter()
        r = one.step()
        one_rows.append({"wall_s": time.perf_counter() - t, "loss": r["loss"]})

    dp = DataParallelJob(rebuild(), rebuild, a.workers, timeout_s=3600)
    dp_rows = []
    trained = 0.0
    for _ in range(a.epochs):
        t = time.perf_counter()
        r = dp.step()
        wall = time.perf_counter() - t
        dp_rows.append({"wall_s": wall, "train_s": dp.inner.wall_s - trained, "loss": r["loss"]})
        trained = dp.inner.wall_s

    s1, s2 = one.state_dict()["net"], dp.state_dict()["net"]
    out = {
        "epochs": a.epochs, "workers": a.workers,
        "channels": a.channels, "cells": a.cells, "batch_size": a.batch_size,
        "train_batches": len(one.data.train_w), "cpus": os.cpu_count(),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
        "one": one_rows, "dp": dp_rows,
        "one_epoch_s": sum(r["wall_s"] for r in one_rows) / a.epochs,
        "dp_epoch_s": sum(r["wall_s"] for r in dp_rows) / a.epochs,
        "dp_train_s": sum(r["train_s"] for r in dp_rows) / a.epochs,
        "max_loss_diff": max(abs(x["loss"] - y["loss"]) for x, y in zip(one_rows, dp_rows)),
        "max_weight_diff": max(float((s1[k].float() - s2[k].float()).abs().max()) for k in s1),
        "same_derived": one.result()["assignment"] == dp.result()["assignment"],
    }
    print(f"1 process: {out['one_epoch_s']:.1f} s/epoch; {a.workers} processes: "
          f"{out['dp_epoch_s']:.1f} s/epoch ({out['dp_train_s']:.1f} s training); "
          f"ratio {out['dp_epoch_s'] / out['one_epoch_s']:.2f}; max loss diff "
          f"{out['max_loss_diff']:.2e}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
