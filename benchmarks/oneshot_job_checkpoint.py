"""What checkpointing a one-shot search job every epoch costs, as a ratio of the epoch.

    .venv/bin/python benchmarks/oneshot_job_checkpoint.py [--epochs 3] [--fraction 0.5]

For each registry strategy that runs its supernet search as a runner job (DARTS second and
first order, FBNet, ProxylessNAS) on a small NB201 (1×8×8, C=4, one cell a stage): the
median epoch (the baseline, timed in the same process), the median checkpoint write
(``torch.save`` + ``fsync`` + ``os.replace``, :func:`nasir.runtime.jobs.save_checkpoint`)
and read (``weights_only=True``), the file size, and ``save / epoch``. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from nasir.runtime.jobs import load_checkpoint, save_checkpoint
from nasir.spaces import get_space
from nasir.strategies import make_strategy


def measure(name: str, options: dict, folder: str) -> dict:
    """Run one strategy's job, checkpointing after every epoch; its figures."""
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    job = make_strategy(name, sp, seed=0, **options).job()
    assert job is not None
    path = os.path.join(folder, f"{name}.pt")
    epochs, saves, loads = [], [], []
    while not job.done:
        t = time.perf_counter()
        record = job.step()
        epochs.append(time.perf_counter() - t)
        t = time.perf_counter()
        save_checkpoint(path, {"state": job.state_dict(), "record": record})
        saves.append(time.perf_counter() - t)
        t = time.perf_counter()
        load_checkpoint(path)
        loads.append(time.perf_counter() - t)
    e, s = float(np.median(epochs)), float(np.median(saves))
    return {"epoch_s": round(e, 4), "save_s": round(s, 4),
            "load_s": round(float(np.median(loads)), 4),
            "kib": round(os.path.getsize(path) / 1024, 1), "save_over_epoch": round(s / e, 4)}


def main() -> None:
    """Measure every job-running strategy; print a table and one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.5)
    args = ap.parse_args()
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    rows = {d.label: [1.0, 1.0, 50.0, 90.0, 20.0] for d in sp.decisions}
    base = {"epochs": args.epochs, "data_fraction": args.fraction}
    latency = {**base, "warmup": 1, "latency_rows": rows}
    runs = {"darts": base, "darts_first_order": base, "fbnet": latency,
            "proxylessnas": latency}
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, options in runs.items():
            out[name] = measure(name, options, folder)
            print(name, out[name], flush=True)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
