"""Background tuning of a run's workloads (issue 23): seconds per workload, database hit rate.

Emulates what the measurement process of a ``latency.tuned`` run does: each candidate is
compiled from the target's tuning database and measured (``measure_network``), its missing
workloads are offered to a ``BackgroundTuner``, and the tuner then gets ``--idle-s`` seconds
(the time the next trial would spend training; ``0`` = until its queue is empty) before the
next candidate. A second pass compiles the same candidates with a new tuner (a later run).

    .venv/bin/python benchmarks/background_tuning.py --space nb201 --candidates 6 \
        --trials-per-workload 2

Prints one JSON line: ``hit_rate_first_pass`` (workloads covered when each candidate was
compiled, over all candidates), per-candidate coverage, ``hit_rate_second_pass``,
``tuning_s_per_workload``, ``extract_s_per_network``, the load averages at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np

SPACES: dict[str, dict[str, Any]] = {
    "nb201": {"input_shape": (1, 8, 8), "channels": 4, "cells_per_stage": 1},
    "tiny_proxyless": {}, "tiny_mnasnet": {}}


def main() -> None:
    from nasir.backends.tvm import MeasureConfig, resolve_target
    from nasir.backends.tvm.tuning_db import TuningDatabase
    from nasir.passes.sampling import sample
    from nasir.runtime.background_tuning import BackgroundTuner
    from nasir.runtime.latency_service import measure_network
    from nasir.spaces import get_space

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="nb201", choices=sorted(SPACES))
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--trials-per-workload", type=int, default=2)
    ap.add_argument("--idle-s", type=float, default=0.0,
                    help="tuning time after each candidate (0: until the queue is empty)")
    ap.add_argument("--budget-s", type=float, default=1200.0, help="stop the first pass after")
    ap.add_argument("--tuning-db", default=None, help="database folder (default: fresh temp)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    load0 = os.getloadavg()
    sp = get_space(args.space, **SPACES[args.space])
    cands = sample(sp, np.random.default_rng(args.seed), args.candidates)
    target = resolve_target("host")
    cfg = MeasureConfig(repeats=5, warmup=1, min_repeat_ms=2.0)
    root = args.tuning_db or tempfile.mkdtemp(prefix="nasir-bgtune-")
    db = TuningDatabase("host", root)
    tuner = BackgroundTuner(db, args.trials_per_workload)
    first, t_start = [], time.perf_counter()
    for a in cands:
        if time.perf_counter() - t_start > args.budget_s:
            break
        g = sp.instantiate(sp.check(a))
        r = measure_network(g, target, cfg, None, build={"db": db}, tuner=tuner)
        first.append((r["latency_tuned_workloads"], r["latency_untuned_workloads"],
                      r.get("median_ms"), r.get("compile_s")))
        print(f"candidate {len(first)}: {first[-1]} pending {tuner.pending}", flush=True)
        tuner.drain(budget_s=args.idle_s or max(1.0, args.budget_s
                                                 - (time.perf_counter() - t_start)))
    s1 = tuner.summary()
    second, t2 = [], time.perf_counter()
    tuner2 = BackgroundTuner(TuningDatabase("host", root), args.trials_per_workload)
    for a in cands[:len(first)]:
        r = measure_network(sp.instantiate(sp.check(a)), target, cfg, None,
                            build={"db": tuner2.db}, tuner=tuner2)
        second.append((r["latency_tuned_workloads"], r["latency_untuned_workloads"],
                       r.get("median_ms"), r.get("compile_s")))

    def rate(rows: list) -> float:
        hit, tot = sum(r[0] for r in rows), sum(r[0] + r[1] for r in rows)
        return round(hit / tot, 3) if tot else 1.0

    print(json.dumps({
        "space": args.space, "options": SPACES[args.space], "candidates": len(first),
        "trials_per_workload": args.trials_per_workload, "idle_s": args.idle_s,
        "hit_rate_first_pass": rate(first),
        "coverage_first_pass": [f"{r[0]}/{r[0] + r[1]}" for r in first],
        "hit_rate_second_pass": rate(second), "second_pass_queued": tuner2.counts["queued"],
        "distinct_workloads": len(db), **s1,
        "tuning_s_per_workload": round(s1["tuning_s"] / max(1, s1["tuning_tuned"]), 2),
        "extract_s_per_network": round(s1["tuning_extract_s"] / max(1, len(first)), 2),
        "median_ms_first_vs_second": [[r[2] for r in first], [r[2] for r in second]],
        "compile_s_second_pass": round(sum(r[3] or 0 for r in second), 2),
        "second_pass_s": round(time.perf_counter() - t2, 1), "db": root,
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
