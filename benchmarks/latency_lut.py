"""Latency table accuracy per space: measured end-to-end latency vs the per-layer prediction.

For each space (default: the main job's ``tiny_mnasnet``, ``nb201`` and ``mnasnet`` at
``--resolution``) this draws ``--n`` held-out random candidates and ``--calibration`` other
networks; the table (:class:`~nasir.backends.tvm.lut.LatencyLUT`, one per space, each
distinct layer compiled and timed alone once) is calibrated on the other networks only:
``mape`` with the linear fit table → measured that a run under ``latency.policy = "auto"``
uses (:class:`~nasir.runtime.latency_policy.Calibration`, least relative squares),
``mape_least_squares`` with a plain least-squares line on the same networks,
``mape_constant`` with the table's own constant (median of measured − layer sum). A run
refits on every trial it measures (front, top-k, a random share), so ``--calibration`` is
how many it has measured when the table answers (30: a run of a few hundred trials). Each
held-out candidate is then compiled and measured whole (median over repeats) and predicted
from the table; PyTorch eager on the same network is the baseline.

``--tuned`` compiles networks from the target's persistent tuning database (issue 23's
compiler half, ``compile_graph(db=...)``; ``--tune-trials`` measured candidates per workload
the database lacks) and predicts from the table a tuned run uses: per *kernel*
(:class:`~nasir.backends.tvm.kernel_lut.KernelLUT`, ``--table workload``: each fused TIR
workload compiled alone with the database's record and timed once, summed over the network's
calls); ``--table layer`` keeps the per-layer table (layers compiled from the database).
Every network is timed on ``--preparations`` fresh virtual machines in each of ``--windows``
separate windows (the fastest counts: noise only slows) and, like every table entry (each
timed in ``--kernel-rounds`` windows, default 4), only once the machine runs at full speed
(``--settle-s``, the :mod:`~nasir.backends.tvm.machine_speed` gate). For the numbers of
issue 23 run it with ``TVM_NUM_THREADS=1`` on an otherwise idle machine.

    nice -n 10 .venv/bin/python benchmarks/latency_lut.py [--spaces tiny_mnasnet,nb201,mnasnet]
        [--n 50] [--resolution 32] [--calibration 30] [--tuned [--tune-trials 8] [--tuning-db D]]

``--tune-only`` (with ``--tuned``) is the first of two phases on a shared or small machine
(tuning wants every core, measuring a quiet one): it tunes, into the database, every
workload the held-out candidates, the calibration networks and the table's distinct layers
(each compiled alone, with ``--table layer`` only) lack, with ``--tune-trials`` candidates
each, and measures nothing; a
later run on the warm database, with nothing else running, measures.

Per space a line ``space: mape … kendall_tau …``; the last line is one JSON object with
``spaces`` (per space ``mape`` (percent), ``mape_least_squares``, ``mape_constant``,
``kendall_tau``, ``n``,
``compile_s_per_candidate``, ``tvm_vs_eager_latency_ratio``, ``table``, ``entries``,
``fully_tuned`` (held-out networks whose every workload came from the database); with
``--retest`` also ``retest_tau`` and ``retest_mape``: each held-out network measured a second
time after the first pass, τ and mean relative difference between the two — how well the
reference repeats, the ceiling of a prediction's ``kendall_tau``), ``mape_max``,
``kendall_tau_min`` and ``tuned``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np


def eager_ms(graph, batch: int, repeats: int) -> float:
    """Median latency of the PyTorch backend's module in eager mode (inference)."""
    import torch

    from nasir.backends.torch import lower

    m = lower(graph, seed=0).eval()
    x = torch.randn(batch, *graph.inputs[0].op.shape)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            m(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            m(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def measure_net(g, target: Any, cfg: Any, build: dict[str, Any], preparations: int,
                windows: int = 1) -> dict[str, Any]:
    """Compile ``g`` once (from the tuning database in ``build``, if any) and time it
    ``preparations`` times, each on a fresh virtual machine and fresh inputs, in each of
    ``windows`` full-speed windows of the gate: the fastest median (a preparation or a
    window can run a network 1.4× slower, and noise only ever slows)."""
    from dataclasses import replace

    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.measure import measure_compiled
    from nasir.errors import BackendError

    try:
        c = compile_graph(g, target, batch=cfg.batch, **build)
    except BackendError as e:
        return {"ok": False, "reason": e.message}
    plain = replace(cfg, settle_s=0.0)

    def timing() -> list[Any]:
        return [measure_compiled(c, plain) for _ in range(max(1, preparations))]

    from nasir.backends.tvm.machine_speed import at_speed

    rs = []
    for _ in range(max(1, windows)):  # every preparation inside one full-speed window
        rs += at_speed(timing, cfg.settle_s, cfg.speed_tol)[0]
    ok = [r for r in rs if r.ok and r.median_ms is not None]
    if not ok:
        return {"ok": False, "reason": rs[0].reason}
    best = min(ok, key=lambda r: r.median_ms)
    untuned = c.tuning.workloads - c.tuning.hits if c.tuning is not None else 0
    return {"ok": True, "median_ms": best.median_ms, "cv": best.cv, "compile_s": c.compile_s,
            "latency_untuned_workloads": untuned}


def _space(name: str, resolution: int) -> Any:
    from nasir.spaces import get_space

    if name == "mnasnet":
        return get_space(name, input_shape=(3, resolution, resolution), num_classes=10)
    return get_space(name)


def bench_space(name: str, args: argparse.Namespace, build: dict[str, Any]) -> dict[str, Any]:
    """Table vs measured latency on ``args.n`` held-out candidates of one space."""
    from scipy.stats import kendalltau

    from nasir.backends.tvm import MeasureConfig
    from nasir.backends.tvm.lut import _typed
    from nasir.passes.sampling import sample
    from nasir.runtime.latency_policy import Calibration
    from nasir.runtime.latency_service import PolicyLUT

    space = _space(name, args.resolution)
    rng = np.random.default_rng(args.seed)
    cands = sample(space, rng, args.n)
    calib = sample(space, rng, args.calibration)
    if args.tune_only:
        return tune_space(name, [space.instantiate(a) for a in cands + calib], args, build)
    cfg = MeasureConfig(batch=args.batch, repeats=args.repeats, warmup=2, min_repeat_ms=5,
                        settle_s=args.settle_s)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="nasir_lut_"), "lut.sqlite")
    lut: Any
    if args.table == "workload":
        from nasir.backends.tvm.kernel_lut import KernelLUT

        lut = KernelLUT(db, build["db"], batch=args.batch, config=cfg, scope=f"{name}-bench",
                        timing_rounds=args.kernel_rounds)
    else:
        lut = PolicyLUT(db, "host", batch=args.batch, config=cfg, scope=f"{name}-bench")
        lut.build = build
    t0 = time.perf_counter()
    graphs = [_typed(space.instantiate(a)) for a in cands]
    for g in graphs:
        lut.ensure(g)
    pairs = []  # calibration from networks that are not among the held-out ones
    for a in calib:
        g = _typed(space.instantiate(a))
        r = measure_net(g, lut.target, cfg, build, args.preparations, args.windows)
        if r["ok"]:
            pairs.append((lut.layer_sum(g), r["median_ms"]))
    diffs = [m - s for s, m in pairs]
    const = float(np.median(diffs)) if diffs else 0.0
    cal = Calibration()  # what a run under latency.policy auto fits (linear)
    cal.fit(pairs)
    lut_s = time.perf_counter() - t0
    print(f"[{name}] table: {len(lut)} {args.table}s ({lut.measured_now} measured now) in "
          f"{lut_s:.0f} s; constant {const:.3f} ms from {len(diffs)} networks", flush=True)
    ols = np.polyfit(*np.array(pairs).T, 1) if len(pairs) >= 3 else np.array([1.0, 0.0])
    measured, predicted, constant, compile_s, eager, untuned = [], [], [], [], [], []
    plain: list[float] = []
    ok_graphs: list[Any] = []
    for i, g in enumerate(graphs):
        r = measure_net(g, lut.target, cfg, build, args.preparations, args.windows)
        if not r["ok"]:
            print(f"[{name}] {i:>3} failed: {r['reason']}", flush=True)
            continue
        keys = lut.ensure(g)  # once: each call lowers the network and extracts its tasks
        s = float(sum(lut.latency(k) for k in keys))  # = lut.layer_sum(g)
        p = cal.predict(s)
        measured.append(r["median_ms"])
        ok_graphs.append(g)
        predicted.append(p)
        constant.append(s + const)
        plain.append(float(ols[0] * s + ols[1]))
        compile_s.append(r["compile_s"])
        untuned.append(r.get("latency_untuned_workloads", 0))
        eager.append(eager_ms(g, args.batch, args.repeats))
        if args.verbose:
            print(f"[{name}] {i:>3} measured {r['median_ms']:.4f} table {p:.4f} "
                  f"sum {s:.4f} calls {len(keys)} "
                  f"cv {r['cv']:.3f} compile {r['compile_s']:.2f} s eager {eager[-1]:.3f} "
                  f"untuned workloads {untuned[-1]}",
                  flush=True)
    retest: dict[str, Any] = {}
    if args.retest:  # the reference against itself: every network measured again, later
        again = [measure_net(g, lut.target, cfg, build, args.preparations, args.windows)
                 for g in ok_graphs]
        pair = [(a, r["median_ms"]) for a, r in zip(measured, again, strict=True) if r["ok"]]
        x, y = np.array(pair).reshape(-1, 2).T
        retest = {"retest_tau": round(float(kendalltau(x, y).statistic), 3) if len(pair) > 1
                  else None,
                  "retest_mape": round(float(np.mean(np.abs(y - x) / x) * 100), 2) if pair
                  else None, "retest_n": len(pair)}
    lut.close()
    m, p, c = np.array(measured), np.array(predicted), np.array(constant)
    out = {"n": len(m), "mape": round(float(np.mean(np.abs(p - m) / m) * 100), 2),
           "kendall_tau": round(float(kendalltau(m, p).statistic), 3),
           "mape_constant": round(float(np.mean(np.abs(c - m) / m) * 100), 2),
           "mape_least_squares": round(float(np.mean(np.abs(np.array(plain) - m) / m) * 100),
                                       2),
           "calibration": {k: round(v, 4) for k, v in cal.state().items()},
           "compile_s_per_candidate": round(float(np.mean(compile_s)), 2),
           "tvm_vs_eager_latency_ratio": round(float(np.median(m / np.array(eager))), 3),
           "median_measured_ms": round(float(np.median(m)), 3), "table": args.table,
           "entries": len(lut), "fully_tuned": int(sum(u == 0 for u in untuned)),
           "kernel_rounds": args.kernel_rounds if args.table == "workload" else None,
           **retest}
    print(f"{name}: mape {out['mape']} % (constant only: {out['mape_constant']} %)  "
          f"kendall_tau {out['kendall_tau']}  "
          f"n {out['n']}/{args.n}  TVM/eager {out['tvm_vs_eager_latency_ratio']}  "
          + (f"retest: tau {retest['retest_tau']} mape {retest['retest_mape']} %  "
             if retest else "") +
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return out


def tune_space(name: str, graphs: list, args: argparse.Namespace, build: dict[str, Any]
               ) -> dict[str, Any]:
    """``--tune-only``: tune what the networks and their distinct layers lack; time nothing."""
    from nasir.backends.tvm.lut import layer_graph, layer_key, layers
    from nasir.backends.tvm.tuning import tune_graph

    seen: dict[str, Any] = {}
    for g in graphs:
        for n in layers(g):
            seen.setdefault(layer_key(n), n)
    todo = [("layer", layer_graph(n)) for n in seen.values()] if args.table == "layer" else []
    todo += [("network", g) for g in graphs]
    hits = workloads = tuned = 0
    tuning_s = 0.0
    t0 = time.perf_counter()
    for k, (kind, g) in enumerate(todo):
        st = tune_graph(g, build["db"], args.tune_trials, batch=args.batch)
        hits, workloads, tuned = hits + st.hits, workloads + st.workloads, tuned + st.tuned
        tuning_s += st.tuning_s
        if st.tuned or args.verbose:
            print(f"[{name}] {k + 1}/{len(todo)} {kind}: {st.workloads} workloads, {st.hits} "
                  f"hits, {st.tuned} tuned in {st.tuning_s:.1f} s", flush=True)
    out = {"layers": len(seen), "networks": len(graphs), "workloads": workloads, "hits": hits,
           "tuned_workloads": tuned, "tuning_s_per_workload": round(tuning_s / tuned, 2)
           if tuned else None, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="tiny_mnasnet,nb201,mnasnet")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=32, help="mnasnet's input size")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kernel-rounds", type=int, default=4,
                    help="gated windows each kernel of the workload table is timed in "
                         "(the fastest counts)")
    ap.add_argument("--calibration", type=int, default=30,
                    help="networks (not held out) the table is calibrated on")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tuned", action="store_true",
                    help="compile from the target's tuning database (issue 23)")
    ap.add_argument("--tune-trials", type=int, default=0,
                    help="with --tuned: trials per workload the database lacks")
    ap.add_argument("--tuning-db", default=None,
                    help="with --tuned: the tuning database folder (default: the target's "
                         "in $NASIR_CACHE_DIR/tuning), e.g. one latency_fidelity.py warmed")
    ap.add_argument("--tune-only", action="store_true",
                    help="with --tuned: tune what the candidates and their layers lack into "
                         "the database, measure nothing (the first of two phases)")
    ap.add_argument("--table", choices=("layer", "workload"), default=None,
                    help="what the prediction sums: each distinct layer compiled and timed "
                         "alone, or each fused TIR workload's kernel (default: workload with "
                         "--tuned, layer without)")
    ap.add_argument("--preparations", type=int, default=2,
                    help="time each network on this many fresh virtual machines, keep the "
                         "fastest")
    ap.add_argument("--windows", type=int, default=3,
                    help="time each network's preparations in this many separate full-speed "
                         "windows, keep the fastest")
    ap.add_argument("--settle-s", type=float, default=10.0,
                    help="time networks and table entries only once the machine runs at "
                         "full speed, waiting up to this long (0: time at once)")
    ap.add_argument("--retest", action="store_true",
                    help="measure every held-out network a second time after the first pass "
                         "(retest_tau, retest_mape: how well the reference repeats — the "
                         "ceiling of any prediction's agreement with it)")
    ap.add_argument("--db", default=None, help="table SQLite file (default: a fresh one)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.table is None:
        args.table = "workload" if args.tuned else "layer"

    import torch

    from nasir.errors import NasirError

    # untuned TVM kernels run on one thread (no parallel schedule); compare like with like
    torch.set_num_threads(1)
    build: dict[str, Any] = {}
    if args.tuned:
        from nasir.backends.tvm import resolve_target
        from nasir.runtime.latency_service import tuned_compile_options

        try:
            if args.tuning_db:
                from nasir.backends.tvm.tuning_db import TuningDatabase

                build = {"db": TuningDatabase(resolve_target("host"), args.tuning_db)}
            else:
                build = tuned_compile_options(resolve_target("host"))
        except NasirError as e:
            print(f"--tuned: {e.message} (issue 23's compiler half has not landed here)")
            return 2
        if args.tune_trials:
            build["trials_per_workload"] = args.tune_trials
    if args.tune_only and not (args.tuned and args.tune_trials):
        ap.error("--tune-only needs --tuned and --tune-trials N")
    res = {name: bench_space(name, args, build) for name in args.spaces.split(",")}
    if args.tune_only:
        print(json.dumps({"tune_only": res, "tune_trials": args.tune_trials}))
        return 0
    print(json.dumps({"spaces": res, "mape_max": max(r["mape"] for r in res.values()),
                      "kendall_tau_min": min(r["kendall_tau"] for r in res.values()),
                      "tuned": bool(args.tuned), "batch": args.batch,
                      "load_average": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
