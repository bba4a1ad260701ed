"""What a compile from the tuning database costs when every workload is in it (issue 23).

For each held-out candidate (seed 5000 on) of a space, the database is first filled (its
missing workloads tuned with ``--trials-per-workload`` candidates each; skipped when
``--tuning-db`` already holds them), then, timed: the fully-hit compile
(``compile_graph(g, db=db)``, the code a trial measures and ``nasir export`` writes) split
into its phases — lowering, the Relax pipeline before tuning (``ms_prepare``), extracting the
workloads, loading their records, applying them and ``tvm.compile`` — and the untuned compile
of the same network (TVM's default schedules) as the baseline of the same run.

    .venv/bin/python benchmarks/compile_from_db.py --candidates 2 --tuning-db DIR

Prints one JSON line per candidate and a summary line: seconds per fully-hit compile, per
untuned compile, their ratio (medians), and the load averages at start and end (the box this
runs on is shared; seconds scale with its load).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np


def _phases(g: Any, db: Any) -> dict[str, float]:
    import tvm
    from tvm import relax

    from nasir.backends.tvm.relax_lowering import lower
    from nasir.backends.tvm.tuning import ms_prepare, workloads

    out: dict[str, float] = {}
    t = time.perf_counter()
    mod = lower(g, None)
    out["lower_s"] = time.perf_counter() - t
    tgt = tvm.target.Target(db.target_json())
    t = time.perf_counter()
    pmod = ms_prepare(mod, tgt)
    out["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    keys = tuple(workloads(pmod, tgt))
    out["extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mem = db.load(keys, top=1)
    out["load_records_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with tgt, mem:
        amod = relax.transform.MetaScheduleApplyDatabase()(pmod)
    out["apply_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tvm.compile(amod, target=tgt)
    out["tvm_compile_s"] = time.perf_counter() - t
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    from nasir.backends.tvm import TuningDatabase, compile_graph
    from nasir.passes.sampling import sample
    from nasir.spaces import get_space

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="tiny_mnasnet")
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--trials-per-workload", type=int, default=1)
    ap.add_argument("--tuning-db", default=None, help="database folder (default: a new one)")
    args = ap.parse_args()
    load0 = os.getloadavg()
    sp = get_space(args.space)
    db = TuningDatabase("host", args.tuning_db or tempfile.mkdtemp(prefix="nasir-cfdb-"),
                        cost_model="random")
    hit, plain = [], []
    for i, a in enumerate(sample(sp, np.random.default_rng(args.seed), args.candidates)):
        g = sp.instantiate(a)
        fill = compile_graph(g, "host", db=db, trials_per_workload=args.trials_per_workload)
        t = time.perf_counter()
        c = compile_graph(g, "host", db=db)
        hit_s = time.perf_counter() - t
        t = time.perf_counter()
        compile_graph(g, "host")
        plain_s = time.perf_counter() - t
        hit.append(hit_s)
        plain.append(plain_s)
        print(json.dumps({"candidate": i, "workloads": c.tuning.workloads,
                          "hits": c.tuning.hits, "tuned_to_fill": fill.tuning.tuned,
                          "hit_compile_s": round(hit_s, 2), "untuned_compile_s": round(plain_s, 2),
                          **_phases(g, db), "load": os.getloadavg()[0]}), flush=True)
    print(json.dumps({"space": args.space, "candidates": args.candidates,
                      "hit_compile_s": round(float(np.median(hit)), 2),
                      "untuned_compile_s": round(float(np.median(plain)), 2),
                      "hit_over_untuned": round(float(np.median(np.divide(hit, plain))), 2),
                      "database": db.path, "load": [load0[0], os.getloadavg()[0]]}))


if __name__ == "__main__":
    main()
