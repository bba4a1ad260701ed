"""The main job under ``latency.policy = "measure"`` against ``"auto"``: same seed, same wall
budget, one after the other on this machine.

The main job is what ``nasir demo`` runs (tiny_mnasnet on digits, regularized evolution,
3-epoch training, MnasNet reward with TVM host latency, two pool workers); here the trial
budget is large so the wall budget decides when the search stops. ``measure``: every worker
compiles and measures its network. ``auto``: the workers only train; the per-layer table
predicts, the front / top-k / a calibration share are measured by the measurement process,
and the final front is measured before the run ends (inside its elapsed time).

Figures (the last line is one JSON object):

- ``trials_per_min_ratio``: finished trials per minute of run time, auto / measure;
- ``latency_share``: under auto, the latency seconds (the measurement process's busy time:
  table lookups, layers new to the table, whole-network measurements) over the trial
  seconds (the workers' trial time plus those latency seconds); ``latency_share_measure``
  is the same ratio under measure (each trial's own latency seconds);
- ``front_hypervolume_ratio``: hypervolume of the auto front over the measure front,
  accuracy (max) and *measured* latency (min), reference point accuracy 0 and 1.1 × the
  slowest measured latency on either front;
- ``front_measured_fraction``: share of the auto front that carries measured latency.

The table starts empty in a fresh folder unless ``--table`` names one (a warm table is the
policy's intended state: built once per space and target apart from runs, shared by every
run); ``--warm N`` first fills it with :func:`nasir.runtime.latency_table.build_table` — the
layers earlier runs deferred, the space's references and N random candidates — timed apart
from the runs (``table_build_s``, ``table_layers``). ``--budget`` is ``latency.budget`` (the
measurement process's busy seconds over the trials' seconds during the run).

    nice -n 10 .venv/bin/python benchmarks/hw_search_speed.py [--wall 200] [--workers 2]
        [--epochs 3] [--seed 0] [--warm 0] [--table PATH] [--budget 0.1]
        [--policies measure,auto] [--settle-s S]

``--settle-s`` sets ``latency.settle_s`` (how long a measurement waits for the machine's full
speed, :mod:`nasir.backends.tvm.machine_speed`) for both runs; default: a run's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}


def run_policy(policy: str, args: argparse.Namespace, table: str, root: str) -> dict[str, Any]:
    """One search of the main job under ``policy``; its figures from the run's store."""
    from nasir.runtime.driver import run_search
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.results import pareto_trials
    from nasir.runtime.store import RunStore

    exp = Experiment.from_dict({
        "seed": args.seed, "budget": {"trials": 100000, "wall_time_s": args.wall},
        "estimator": {"options": {"epochs": args.epochs}},
        "executor": {"workers": args.workers},
        "latency": {"policy": policy, "table": table, "top_k": args.top_k,
                    "calibration": args.calibration, "budget": args.budget,
                    **({} if args.settle_s is None else {"settle_s": args.settle_s})}})
    run = os.path.join(root, policy)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_search(exp, run)
    wall = time.perf_counter() - t0
    st = RunStore.open(run)
    try:
        trials, elapsed = st.trials(), float(st.meta("elapsed_s", 0.0) or 0.0)
        summary = st.meta("latency.summary") or {}
    finally:
        st.close()
    done = [t for t in trials if t["status"] == "done"]
    trial_s = sum(float(t.get("eval_s") or 0.0) for t in done if not t.get("cached_from"))
    if policy == "measure":
        lat_s = sum(float(t["metrics"].get("latency_s") or 0.0) for t in done
                    if not t.get("cached_from"))
        share = lat_s / trial_s if trial_s else None
    else:
        lat_s = float(summary.get("measure_s", 0.0)) + float(summary.get("predict_s", 0.0))
        share = lat_s / (trial_s + lat_s) if trial_s + lat_s else None
    front = pareto_trials(done, OBJECTIVES)
    measured = [t for t in front if t["metrics"].get("latency_source") == "measured"]
    return {"policy": policy, "trials": len(done), "failed": len(trials) - len(done),
            "elapsed_s": elapsed, "wall_s": wall, "load_average_start": load,
            "load_average_end": os.getloadavg()[0],
            "trials_per_min": 60.0 * len(done) / elapsed if elapsed else 0.0,
            "latency_s": lat_s, "trial_s": trial_s, "latency_share": share,
            "measured_trials": sum(t["metrics"].get("latency_source") == "measured"
                                   for t in done),
            "front": [(float(t["metrics"]["accuracy"]), float(t["metrics"]["latency_ms"]))
                      for t in measured],
            "front_size": len(front), "front_measured": len(measured), "summary": summary,
            "wait_s": float(summary.get("wait_s", 0.0))}


def warm_table(table: str, n: int, seed: int) -> dict[str, Any]:
    """Build the main job's table apart from the runs (the layers earlier runs deferred,
    the references, ``n`` random candidates): what ``build_table`` did."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.latency_table import build_table
    from nasir.runtime.preflight import prepare

    exp = Experiment.from_dict({"latency": {"table": table}})
    return build_table(exp, prepare(exp, smoke=False).space, candidates=n, seed=10_000 + seed)


def hypervolume(front: list[tuple[float, float]], ref_latency: float) -> float:
    """Area dominated by ``(accuracy, latency)`` points, reference (0, ``ref_latency``)."""
    from nasir.pareto import hypervolume as hv

    return hv(front, (0.0, ref_latency), ("max", "min")) if front else 0.0


def exp_settle(args: argparse.Namespace) -> float:
    """The ``latency.settle_s`` both runs used."""
    from nasir.runtime.experiment_sections import LatencyConfig

    return LatencyConfig().settle_s if args.settle_s is None else args.settle_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wall", type=float, default=200.0, help="wall budget per run (s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--calibration", type=float, default=0.1)
    ap.add_argument("--budget", type=float, default=0.1, help="latency.budget under auto")
    ap.add_argument("--table", default=None, help="per-layer table file (default: a fresh one)")
    ap.add_argument("--warm", type=int, default=0,
                    help="fill the table with N random candidates' layers first")
    ap.add_argument("--policies", default="measure,auto")
    ap.add_argument("--settle-s", type=float, default=None,
                    help="latency.settle_s for both policies (default: a run's default)")
    ap.add_argument("--keep", default=None, help="keep the run folders here")
    args = ap.parse_args(argv)

    root = args.keep or tempfile.mkdtemp(prefix="nasir_hw_speed_")
    os.makedirs(root, exist_ok=True)
    table = args.table or os.path.join(root, "latency_lut.sqlite")
    built = warm_table(table, args.warm, args.seed) if args.warm else {}
    build_s = float(built.get("seconds", 0.0))
    if args.warm:
        print(f"table: {args.warm} candidates, {built['measured']} new layers "
              f"({built['layers']} in all) in {build_s:.0f} s", flush=True)
    res = {}
    for policy in args.policies.split(","):
        r = run_policy(policy, args, table, root)
        res[policy] = r
        total = r["trial_s"] + (0 if policy == "measure" else r["latency_s"])
        print(f"{policy:>8}: {r['trials']} trials ({r['failed']} not done) in "
              f"{r['elapsed_s']:.0f} s = {r['trials_per_min']:.1f}/min; latency "
              f"{r['latency_s']:.0f} s of {total:.0f} s "
              f"({100 * (r['latency_share'] or 0):.0f} %); {r['measured_trials']} measured; "
              f"front {r['front_measured']}/{r['front_size']} measured; load "
              f"{r['load_average_start']:.1f} -> {r['load_average_end']:.1f}", flush=True)
    m, a = res.get("measure"), res.get("auto")
    out: dict[str, Any] = {"wall_s": args.wall, "workers": args.workers, "epochs": args.epochs,
                           "seed": args.seed, "warm_candidates": args.warm,
                           "budget": args.budget, "table_build_s": round(build_s, 1),
                           "settle_s": exp_settle(args),
                           "table_layers": built.get("layers"), "cpus": os.cpu_count()}
    if m and a:
        fronts = m["front"] + a["front"]
        ref = 1.1 * max(p[1] for p in fronts) if fronts else 1.0
        hv_m, hv_a = hypervolume(m["front"], ref), hypervolume(a["front"], ref)
        out.update({
            "trials_per_min_ratio": round(a["trials_per_min"] / m["trials_per_min"], 3)
            if m["trials_per_min"] else None,
            "latency_share": None if a["latency_share"] is None
            else round(a["latency_share"], 3),
            "front_hypervolume_ratio": round(hv_a / hv_m, 3) if hv_m else None,
            "front_measured_fraction": round(a["front_measured"] / a["front_size"], 3)
            if a["front_size"] else None})
    for k, r in res.items():
        out.update({f"trials_{k}": r["trials"],
                    f"trials_per_min_{k}": round(r["trials_per_min"], 2),
                    f"latency_share_{k}": None if r["latency_share"] is None
                    else round(r["latency_share"], 3),
                    f"measured_trials_{k}": r["measured_trials"],
                    f"front_{k}": r["front"],
                    f"load_{k}": [round(r["load_average_start"], 1),
                                  round(r["load_average_end"], 1)]})
    if a:  # seconds trials waited for their table latency (on the critical path)
        out["latency_wait_s_auto"] = round(a["wait_s"], 1)
        s = a["summary"]
        out.update({"auto_measure_s": s.get("measure_s"), "auto_predict_s": s.get("predict_s"),
                    "auto_new_layers": s.get("new_layers"), "auto_dropped": s.get("dropped"),
                    "auto_deferred": s.get("deferred"),
                    "auto_past_budget_s": round(a["elapsed_s"] - args.wall, 1)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
