"""Does the latency a search sees rank candidates like their best deployment does?

For held-out random candidates of the MnasNet space (at ``--resolution``, ≥ 64 for the
issue's figures) and of the main job's space (``tiny_mnasnet`` on 8×8 digits, what ``nasir
demo`` searches), in order, each candidate is

1. compiled from the per-target tuning database — its workloads the database lacks tuned
   first with ``--trials-per-workload`` candidates each — and measured (``measure(g,
   db=...)``): the TVM library's latency alone (``search_tvm``);
2. measured as a run with the database measures a trial (``measure_network``, the run's
   ``latency.paths``, default ``auto``: the fastest of the TVM library and ONNX Runtime on
   this host): **the latency a search sees** (``search``);
3. compiled untuned (TVM's default schedules) and measured: what a search saw before;
4. deployed three ways on this machine with the same weights and threads:
   nasir's exported TVM library (built from the same database), PyTorch eager, ONNX Runtime
   (:func:`nasir.backends.tvm.host_compare.host_latencies`), ``--reference-preparations``
   times (each built anew; default 2); the fastest is the best deployment latency.

Every timing waits for the machine's full speed (:mod:`nasir.backends.tvm.machine_speed`):
the search's measurements up to ``--settle-s`` seconds (default: a run's
``latency.settle_s``), the deployment reference's up to ``--reference-settle-s`` (default
60). ``full_speed`` is the share of the search's measurements timed at full speed.

Figures per space: ``rank_tau`` (Kendall τ, search latency vs best deployment latency; the
TVM-only search latency's τ and the untuned baseline's next to it), ``tuned_vs_eager``
(median ratio tuned TVM / eager), the tuning seconds per newly tuned workload and the
database's hit rate over the candidates
(workload hits / workloads, in candidate order, from the database's state at the start).
MobileNetV2 at 224² gets its ``tuned_vs_eager`` too (``--no-mobilenetv2`` skips it).

    .venv/bin/python benchmarks/latency_fidelity.py [--candidates 30] [--resolution 64]
        [--trials-per-workload 16] [--spaces mnasnet,main] [--tuning-db DIR]

The default database is a fresh temporary folder (the figures include every tuning second);
``--tuning-db DIR`` reuses one. Last line: one JSON object with the figures.

Two phases, for a shared or small machine: tuning wants every core and measuring wants a
quiet one, so ``--tune-only`` tunes the candidates' missing workloads into ``--tuning-db``
without measuring anything (several such processes may share the database, e.g. one per
space; its figures are the tuning seconds per workload and the hit rate from the database's
state at its start), and a later run on the warm database, with nothing else running,
measures (its hit rate is then ≈ 1):

    B=benchmarks/latency_fidelity.py
    .venv/bin/python $B --tune-only --tuning-db D --spaces mnasnet
    .venv/bin/python $B --tune-only --tuning-db D --spaces main --no-mobilenetv2
    .venv/bin/python $B --tuning-db D      # then, on the quiet machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"


def _space(name: str, resolution: int):
    from nasir.spaces import get_space

    if name == "mnasnet":
        return get_space("mnasnet", input_shape=(3, resolution, resolution), num_classes=10)
    if name == "main":
        return get_space("tiny_mnasnet")
    raise SystemExit(f"unknown space {name!r} (use mnasnet, main)")


def run_space(name: str, args: argparse.Namespace, db) -> dict:
    """Measure ``args.candidates`` held-out candidates of one space; returns its figures."""
    from scipy.stats import kendalltau

    from nasir.backends.tvm import MeasureConfig, measure, resolve_target
    from nasir.backends.tvm.machine_speed import at_full_speed
    from nasir.passes.sampling import sample
    from nasir.runtime.latency_measure import deploy_paths, measure_network, measurement_cores

    sp = _space(name, args.resolution)
    cands = sample(sp, np.random.default_rng(args.seed), args.candidates)
    if args.tune_only:
        return tune_space(sp, cands, args, db)
    cfg = MeasureConfig(repeats=args.repeats, warmup=2, min_repeat_ms=args.min_repeat_ms,
                        trials_per_workload=args.trials_per_workload, settle_s=args.settle_s)
    plain = MeasureConfig(repeats=args.repeats, warmup=2, min_repeat_ms=args.min_repeat_ms,
                          settle_s=args.settle_s)
    paths = deploy_paths(args.paths if args.paths == "auto" else args.paths.split(","), "host")
    host = resolve_target("host")
    cores = measurement_cores(args.threads) if args.threads else None
    rows = []
    speeds: list[float] = []
    hits = workloads = tuned = 0
    tuning_s = 0.0
    print(f"== {sp.name} {tuple(sp.body.inputs[0].op.shape)}: {args.candidates} candidates "
          f"(seed {args.seed}), {args.trials_per_workload} trials per new workload, search "
          f"latency the fastest of {'+'.join(paths)}; {_load()}")
    print(f"{'#':>3} {'search':>8} {'path':>11} {'s_tvm':>8} {'untuned':>8} {'tvm':>8} "
          f"{'eager':>8} {'ort':>8} {'best':>11} {'wl':>3} {'hit':>3} {'new':>3} "
          f"{'tune s':>7} {'speed':>5}", flush=True)
    for i, a in enumerate(cands):
        if time.monotonic() > args.deadline:
            print(f"time budget spent: {len(rows)} of {args.candidates} candidates measured")
            break
        g = sp.instantiate(a)
        r = measure(g, "host", cfg, db=db)
        s = _as_a_run(lambda g=g: measure_network(g, host, plain, None, build={"db": db},
                                                  paths=paths, cores=cores), cores)
        u = measure(g, "host", plain)
        if not (r.ok and u.ok and s["ok"]):
            print(f"{i:>3} failed: {r.reason or u.reason or s.get('reason')}", flush=True)
            continue
        st = r.extra["tuning"]
        hits += st["hits"]
        workloads += st["workloads"]
        tuned += st["tuned"]
        tuning_s += st["tuning_s"]
        if "latency_speed" in s:
            speeds.append(float(s["latency_speed"]))
        t = _reference(g, db, args)
        rows.append((float(s["median_ms"]), float(u.median_ms), t["tvm"], t["eager"],
                     t["onnxruntime"], min(t.values()), float(r.median_ms)))
        print(f"{i:>3} {s['median_ms']:>8.3f} {s.get('latency_path', 'tvm'):>11} "
              f"{r.median_ms:>8.3f} {u.median_ms:>8.3f} {t['tvm']:>8.3f} "
              f"{t['eager']:>8.3f} {t['onnxruntime']:>8.3f} {min(t, key=lambda k: t[k]):>11} "
              f"{st['workloads']:>3} {st['hits']:>3} {st['tuned']:>3} {st['tuning_s']:>7.1f} "
              f"{s.get('latency_speed', float('nan')):>5.2f}", flush=True)
    if len(rows) < 2:
        return {"candidates": len(rows), "rank_tau": None, "rank_tau_untuned": None,
                "tuned_vs_eager": None, "tuning_s_per_workload": None, "db_hit_rate": None,
                "load": _load()}
    m = np.array(rows)
    out = {"candidates": len(rows),
           "rank_tau": round(float(kendalltau(m[:, 0], m[:, 5]).statistic), 3),
           "rank_tau_tvm_only": round(float(kendalltau(m[:, 6], m[:, 5]).statistic), 3),
           "rank_tau_untuned": round(float(kendalltau(m[:, 1], m[:, 5]).statistic), 3),
           "search_vs_best": round(float(np.median(m[:, 0] / m[:, 5])), 3),
           "tuned_vs_eager": round(float(np.median(m[:, 2] / m[:, 3])), 3),
           "untuned_vs_eager": round(float(np.median(m[:, 1] / m[:, 3])), 3),
           "ort_vs_eager": round(float(np.median(m[:, 4] / m[:, 3])), 3),
           "best_is_tvm": round(float(np.mean(m[:, 2] <= m[:, 5] + 1e-12)), 3),
           "tuning_s_per_workload": round(tuning_s / tuned, 2) if tuned else None,
           "tuned_workloads": tuned, "db_hit_rate": round(hits / workloads, 3)
           if workloads else None,
           "full_speed": round(float(np.mean([at_full_speed(x) for x in speeds])), 3)
           if speeds else None, "load": _load()}
    print(f"{sp.name}: {json.dumps(out)}", flush=True)
    return out


def _as_a_run(measure, cores):
    """``measure()`` on the CPUs a run's measurement process is pinned to (``cores``, the
    last ``latency.cores``), as the run would time it: there the machine-speed gate waits
    for those CPUs, it cannot pick a faster one."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return measure()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        return measure()
    finally:
        os.sched_setaffinity(0, saved)


def _reference(g, db, args: argparse.Namespace) -> dict[str, float]:
    """Each deployment path's latency: the fastest over ``--reference-preparations``
    gated measurements, each of a fresh build."""
    from nasir.backends.tvm.host_compare import host_latencies

    best: dict[str, float] = {}
    for _ in range(args.reference_preparations):
        h = host_latencies(g, db=db, repeats=args.repeats, min_repeat_ms=args.min_repeat_ms,
                           threads=args.threads, settle_s=args.reference_settle_s)
        best = {k: min(v, best.get(k, v)) for k, v in h.times_ms.items()}
    return best


def tune_space(sp, cands: list, args: argparse.Namespace, db) -> dict:
    """``--tune-only``: tune the missing workloads of each candidate, measure nothing."""
    from nasir.backends.tvm.tuning import tune_graph

    hits = workloads = tuned = 0
    tuning_s = 0.0
    print(f"== {sp.name} {tuple(sp.body.inputs[0].op.shape)}: tuning {len(cands)} candidates "
          f"(seed {args.seed}), {args.trials_per_workload} trials per new workload; {_load()}")
    print(f"{'#':>3} {'wl':>3} {'hit':>3} {'new':>3} {'tune s':>7}", flush=True)
    done = 0
    for i, a in enumerate(cands):
        if time.monotonic() > args.deadline:
            print(f"time budget spent: {done} of {len(cands)} candidates tuned")
            break
        st = tune_graph(sp.instantiate(a), db, args.trials_per_workload,
                        cost_model=args.cost_model)
        hits += st.hits
        workloads += st.workloads
        tuned += st.tuned
        tuning_s += st.tuning_s
        done += 1
        print(f"{i:>3} {st.workloads:>3} {st.hits:>3} {st.tuned:>3} {st.tuning_s:>7.1f}",
              flush=True)
    out = {"candidates": done, "tuning_s_per_workload": round(tuning_s / tuned, 2)
           if tuned else None, "tuned_workloads": tuned,
           "db_hit_rate": round(hits / workloads, 3) if workloads else None, "load": _load()}
    print(f"{sp.name}: {json.dumps(out)}", flush=True)
    return out


def run_mobilenetv2(args: argparse.Namespace, db) -> dict:
    """Tuned TVM (from the database) vs eager vs ONNX Runtime for MobileNetV2 at 224²."""
    from nasir.backends.tvm.host_compare import host_latencies
    from nasir.spaces import get_space

    sp = get_space("mobilenet_v2")
    ref = sp.reference("mobilenet_v2_1.0")
    if args.tune_only:
        return tune_space(sp, [ref], args, db)
    g = sp.instantiate(ref)
    t0 = time.perf_counter()
    h = host_latencies(g, db=db, trials_per_workload=args.trials_per_workload,
                       repeats=args.repeats, min_repeat_ms=args.min_repeat_ms,
                       threads=args.threads, settle_s=args.reference_settle_s)
    st = h.tuning or {}
    out = {"tuned_vs_eager": round(h.times_ms["tvm"] / h.times_ms["eager"], 3),
           "times_ms": {k: round(v, 3) for k, v in h.times_ms.items()},
           "workloads": st.get("workloads"), "hits": st.get("hits"),
           "tuned_workloads": st.get("tuned"), "seconds": round(time.perf_counter() - t0, 1),
           "load": _load()}
    print(f"mobilenet_v2 224: {json.dumps(out)}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="mnasnet,main", help="comma list of mnasnet, main")
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--resolution", type=int, default=64, help="MnasNet input size")
    ap.add_argument("--trials-per-workload", type=int, default=16)
    ap.add_argument("--tuning-db", default=None, help="database folder (default: fresh temp)")
    ap.add_argument("--paths", default="auto",
                    help="the search's latency.paths: auto or a comma list of tvm, "
                         "onnxruntime, eager")
    ap.add_argument("--cost-model", default="auto", help="auto, xgb, random or none")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-repeat-ms", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=5000, help="held-out sampling seed")
    ap.add_argument("--no-mobilenetv2", action="store_true")
    ap.add_argument("--settle-s", type=float, default=None,
                    help="the search's wait for full machine speed (default: a run's "
                         "latency.settle_s; 0: time at once)")
    ap.add_argument("--reference-settle-s", type=float, default=60.0,
                    help="the deployment reference's wait for full machine speed")
    ap.add_argument("--reference-preparations", type=int, default=2,
                    help="fresh builds of each deployment path, the fastest kept")
    ap.add_argument("--tune-only", action="store_true",
                    help="tune the candidates' missing workloads into the database and "
                         "measure nothing (the first of two phases, see above)")
    ap.add_argument("--time-budget-s", type=float, default=None,
                    help="stop starting candidates after this many seconds (figures over "
                         "those measured; the count is in the JSON)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every path (TVM_NUM_THREADS, torch, ONNX Runtime); "
                         "default: the physical cores. A run measures with latency.cores "
                         "(default 1) threads: --threads 1 compares what it sees")
    args = ap.parse_args(argv)
    if args.settle_s is None:
        from nasir.runtime.experiment_sections import LatencyConfig

        args.settle_s = LatencyConfig().settle_s
    if args.threads:  # before TVM's runtime starts its thread pool
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    args.deadline = time.monotonic() + (args.time_budget_s or float("inf"))

    from nasir.backends.tvm.tuning_db import TuningDatabase

    db = TuningDatabase("host", args.tuning_db or tempfile.mkdtemp(prefix="nasir-fidelity-"),
                        cost_model=args.cost_model)
    print(f"tuning database {db.path} ({len(db)} workloads at start); {_load()}", flush=True)
    figures: dict = {"trials_per_workload": args.trials_per_workload,
                     "cost_model": args.cost_model,
                     "resolution": args.resolution}
    for name in [s.strip() for s in args.spaces.split(",") if s.strip()]:
        figures[name] = run_space(name, args, db)
    if not args.no_mobilenetv2:
        figures["mobilenet_v2_224"] = run_mobilenetv2(args, db)
    spaces = [figures[k] for k in ("mnasnet", "main") if k in figures]
    taus = [s["rank_tau"] for s in spaces if s.get("rank_tau") is not None]
    figures["rank_tau"] = min(taus) if taus else None
    figures["tuned_vs_eager"] = {k: figures[k].get("tuned_vs_eager") for k in
                                 ("mnasnet", "main", "mobilenet_v2_224") if k in figures}
    figures["tuning_s_per_workload"] = {k: figures[k]["tuning_s_per_workload"]
                                        for k in ("mnasnet", "main") if k in figures}
    figures["db_hit_rate"] = {k: figures[k]["db_hit_rate"] for k in ("mnasnet", "main")
                              if k in figures}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
