"""Load: a 100,000-trial store listed, shown and reported by the CLI; 8 concurrent workers.

    .venv/bin/python benchmarks/reliability_load.py [--trials 100000] [--concurrent 400]

Baseline in the same run: the same commands on a 1,000-trial store (the ratio shows how the
command time grows with the store; linear growth would be 100×). Ends with one JSON line.
The helpers are those of ``tests/test_reliability_load.py`` (5,000 trials, 48 concurrent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_reliability_load import concurrent_run, fill_store, time_commands


def main() -> None:
    """Fill the stores, time the commands, run the concurrent search."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100_000)
    ap.add_argument("--baseline", type=int, default=1_000)
    ap.add_argument("--concurrent", type=int, default=400)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nasir_load_")
    figures: dict = {"trials": args.trials}
    for label, n in (("baseline", args.baseline), ("big", args.trials)):
        folder = os.path.join(tmp, label, "run")
        c0 = time.process_time()
        fill_s = fill_store(folder, n)
        figures[f"{label}_fill_s"] = round(fill_s, 1)
        figures[f"{label}_fill_trials_per_cpu_s"] = round(n / (time.process_time() - c0))
        times = time_commands(folder)
        figures[label] = {k: round(v, 2) for k, v in times.items()}
        print(f"{label}: {n} trials written in {fill_s:.0f} s; "
              + ", ".join(f"nasir {k} {v:.2f} s" for k, v in times.items()), flush=True)
        figures[f"{label}_db_mb"] = round(os.path.getsize(os.path.join(folder, "run.sqlite"))
                                          / 2**20, 1)
    figures["ratio_big_over_baseline"] = {
        k: round(figures["big"][k] / max(figures["baseline"][k], 1e-9), 1)
        for k in figures["big"]}
    r = concurrent_run(os.path.join(tmp, "concurrent"), args.concurrent, workers=8)
    print(f"8 workers: {r}", flush=True)
    figures["concurrent_8_workers"] = {k: (round(v, 1) if isinstance(v, float) else v)
                                       for k, v in r.items()}
    figures["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"benchmark": "reliability_load", **figures}))


if __name__ == "__main__":
    main()
