"""``nasir latency SPACE[:ARCH]``: compile an architecture with TVM and measure its latency.

Locally (``--target host``) or on a device through a TVM RPC tracker
(``--rpc HOST:PORT --key KEY``). Results are cached in SQLite (``--cache``, default
``$NASIR_CACHE_DIR/latency.sqlite``) by canonical hash, target, input shape and batch.
``--trials-per-workload N`` (or ``--tuning-db DIR``) compiles from the target's MetaSchedule
tuning database, tuning the workloads it lacks with N candidates each — the code ``nasir
export`` writes. ``--compare`` also times PyTorch eager and ONNX Runtime on this machine
with the same weights and threads, and prints all three.
"""

from __future__ import annotations

import json

from nasir.errors import NasirError

__all__ = ["add_parser"]


def _space_at(spec: str, resolution: int | None):
    from nasir.commands.show import resolve_arch, split_arch
    from nasir.spaces import get_space

    sp, a = resolve_arch(spec)
    if resolution is not None:
        if resolution < 1:
            raise NasirError(f"--resolution must be positive, got {resolution}")
        c = sp.body.inputs[0].op.shape[0] if sp.body.inputs else 3
        sp = get_space(split_arch(spec)[0], input_shape=(c, resolution, resolution))
        a = sp.check(dict(a))
    return sp, a


def _run(args) -> int:
    from nasir.backends.tvm import LatencyCache, MeasureConfig, RemoteDevice, measure

    sp, a = _space_at(args.arch, args.resolution)
    g = sp.instantiate(a)
    cfg = MeasureConfig(batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                        cv_threshold=args.cv_threshold, tune_trials=args.tune_trials)
    remote = None
    if args.rpc:
        remote = RemoteDevice.parse(args.rpc, args.key, timeout_s=args.timeout)
    elif args.key:
        raise NasirError("--key needs --rpc HOST:PORT (the tracker)")
    cache = None if args.no_cache else LatencyCache(args.cache)
    db = None
    if args.tuning_db or args.trials_per_workload:
        from nasir.backends.tvm.tuning_db import TuningDatabase

        db = TuningDatabase(args.target, args.tuning_db)
    if args.compare:
        return _compare(g, args, db)
    r = measure(g, args.target, cfg, remote=remote, cache=cache, db=db)
    out = {"space": sp.name, "assignment": a.to_json(), "status": r.status,
           "median_ms": r.median_ms, "cv": r.cv, "compile_s": r.compile_s,
           "target": r.target, "input_shape": list(r.input_shape), "batch": r.batch,
           "flagged": r.flagged, "retries": r.retries, "cached": r.cached,
           "remote": r.remote, "reason": r.reason, "hash": r.graph_key,
           "tuning": r.extra.get("tuning")}
    if args.json:
        print(json.dumps(out))
    else:
        for k in ("space", "status", "median_ms", "cv", "compile_s", "target", "input_shape",
                  "batch", "flagged", "cached", "remote", "reason"):
            v = out[k]
            if v is None:
                continue
            print(f"{k:>12}: {v:.4g}" if isinstance(v, float) else f"{k:>12}: {v}")
    return 0 if r.ok else 1


def _compare(g, args, db) -> int:
    from nasir.backends.tvm import resolve_target
    from nasir.backends.tvm.host_compare import host_latencies

    if args.rpc or not resolve_target(args.target).host_cpu:
        raise NasirError("--compare times this machine's CPU", where="--target",
                         hint="use --target host (or a dict for this CPU) without --rpc")
    h = host_latencies(g, db=db, trials_per_workload=args.trials_per_workload,
                       batch=args.batch, repeats=args.repeats)
    if args.json:
        print(json.dumps(h.to_json()))
        return 0
    for k, v in sorted(h.times_ms.items(), key=lambda kv: kv[1]):
        print(f"{k:>12}: {v:.4g} ms{'  (best)' if k == h.best else ''}")
    print(f"{'threads':>12}: {h.threads}")
    if h.tuning:
        print(f"{'tvm tuning':>12}: {h.tuning['hits']}/{h.tuning['workloads']} workloads "
              f"from the database, {h.tuning['tuned']} tuned now")
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("latency", help="measure an architecture's latency with TVM",
                       description="Compile SPACE[:ARCH] with Apache TVM for a target and "
                                   "measure its latency (median over repeats, CV).")
    p.add_argument("arch", help="SPACE, SPACE:REFERENCE or SPACE:{label=value,...}")
    p.add_argument("--target", default="host",
                   help="host, cuda, aarch64, armv7, a TVM JSON dict or 'llvm -mcpu=…'")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--resolution", type=int, default=None,
                   help="input height = width (default: the space's)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs (default 3)")
    p.add_argument("--cv-threshold", type=float, default=0.10,
                   help="retry and flag when spread exceeds this CV (default 0.10)")
    p.add_argument("--tune-trials", type=int, default=0,
                   help="MetaSchedule trial budget (default 0: no tuning)")
    p.add_argument("--trials-per-workload", type=int, default=0, metavar="N",
                   help="compile from the target's tuning database, tuning each workload it "
                        "lacks with N candidates (default 0: none tuned)")
    p.add_argument("--tuning-db", metavar="DIR",
                   help="tuning database folder (default $NASIR_CACHE_DIR/tuning)")
    p.add_argument("--compare", action="store_true",
                   help="also time PyTorch eager and ONNX Runtime here; print all three")
    p.add_argument("--rpc", metavar="HOST:PORT", help="RPC tracker to measure through")
    p.add_argument("--key", help="device key at the tracker")
    p.add_argument("--timeout", type=float, default=600.0, help="RPC timeout in seconds")
    p.add_argument("--cache", default=None, help="SQLite latency cache file")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_run)
