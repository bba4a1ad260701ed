"""NetAdapt, the paper's method next to the per-block variant, on a TVM per-layer latency table.

Both adapt the same trained start network of ``tiny_mnasnet`` on digits (1×8×8;
``--start``: a reference; ``REF-wide``, the reference with every block at its largest
filter count, default ``small-wide``, so that the per-block variant has room to shrink; or
``widest``: MBConv6, k5, SE, every width and depth at its largest) to the same budget,
``--budget`` × its latency, by the same latency model: the per-layer table of
:class:`~nasir.backends.tvm.lut.LatencyLUT` on the host (every distinct layer compiled and
measured alone with TVM once, kept in ``runs/netadapt_lut.db``; the prediction is the sum
over the primitive layers).

- ``netadapt`` (the paper's method, :class:`~nasir.strategies.oneshot.netadapt.NetAdaptSearch`):
  per iteration, for each layer (channel group) the largest filter count meeting the
  iteration's target, L2-norm filter selection, a short-term fine-tune of each proposal
  (``--short`` epochs), the most accurate kept; a long-term fine-tune (``--long``) at the end.
  The reduction schedule is scaled for the run: ``--reduction`` of the start latency
  (paper/official code 0.025) decaying 0.96 per iteration.
- ``netadapt_blocks`` (the variant,
  :class:`~nasir.strategies.oneshot.netadapt_blocks.NetAdaptBlocksSearch`): per iteration one
  block-width decision steps to a smaller option, first filters kept, ``--short`` epochs of
  fine-tuning per proposal; this script then fine-tunes its result ``--long`` epochs from
  its weights too, so both end with the same training budget.

Both results are then compiled whole and measured with TVM next to the start network, in
turns for ``--rounds`` rounds (each a median of 15 repeats); ``measured_ratio`` is the
median over rounds of the network's latency over the start network's in the same round.

Run: ``nice -n 10 .venv/bin/python benchmarks/netadapt.py``. Last line JSON:
``{"start_us": …, "budget_us": …, "start_acc": …, "netadapt": {…}, "netadapt_blocks": {…}}``
where each method has ``lut_us``, ``measured_us``, ``measured_ratio``, ``met``,
``iterations``, ``short_acc``, ``long_acc``, ``search_s``, ``widths`` / ``changed``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np
import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.torch.lowering import prepare
from nasir.backends.tvm.compile import compile_graph
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.measure import MeasureConfig, measure_compiled
from nasir.spaces import get_space
from nasir.strategies.oneshot.netadapt import NetAdaptSearch
from nasir.strategies.oneshot.netadapt_blocks import NetAdaptBlocksSearch


def _start(sp, name: str) -> dict:
    if name.endswith("-wide"):  # a reference with every block at its largest filter count
        return dict(sp.reference(name[:-5])) | {
            d.label: max(d.options) for d in sp.decisions if d.label.endswith("_filters")}
    if name != "widest":
        return dict(sp.reference(name))
    start = {}
    for d in sp.decisions:
        kind = d.label.split("_", 1)[1]
        start[d.label] = {"op": "mbconv6", "kernel": 5, "se": 0.25, "skip": True}.get(
            kind, max(d.options) if kind in ("filters", "layers") else d.options[0])
    return start


def _median_cv(path: str) -> float | None:
    import sqlite3

    cvs = [r[0] for r in sqlite3.connect(path).execute(
        "SELECT cv FROM lut_layer WHERE cv IS NOT NULL").fetchall()]
    return round(float(np.median(cvs)), 3) if cvs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", default="small-wide",
                    help="a tiny_mnasnet reference, REF-wide (its blocks at their largest "
                         "filter counts) or 'widest'")
    ap.add_argument("--budget", type=float, default=0.6,
                    help="latency budget as a fraction of the start network's")
    ap.add_argument("--reduction", type=float, default=0.1,
                    help="first iteration's latency reduction, fraction of the start's")
    ap.add_argument("--short", type=int, default=1, help="short-term fine-tune epochs")
    ap.add_argument("--long", type=int, default=3, help="long-term fine-tune epochs")
    ap.add_argument("--pretrain", type=int, default=5, help="start network training epochs")
    ap.add_argument("--lut", default="runs/netadapt_lut.db")
    ap.add_argument("--rounds", type=int, default=3, help="whole-network measuring rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    start = sp.check(_start(sp, args.start))
    lut = LatencyLUT(args.lut, "host",
                     config=MeasureConfig(repeats=9, min_repeat_ms=5, max_retries=1))
    base = prepare(sp.instantiate(start))
    lat0 = lut.predict(base)
    budget = args.budget * lat0
    print(f"start ({args.start}): {lat0 * 1000:.1f} µs by the layer table; budget "
          f"{budget * 1000:.1f} µs", flush=True)
    pre = TrainingEstimator(TrainConfig(epochs=args.pretrain, seed=0))
    r0 = pre.estimate(sp.instantiate(start), keep_state=True)
    init = pre.last_state
    print(f"start trained {args.pretrain} epochs: val {r0.val_accuracy:.4f}", flush=True)

    t = time.perf_counter()
    paper = NetAdaptSearch(sp, seed=0, budget_ms=budget, lut=lut, init=init,
                           reduction_ratio=args.reduction, short_term_epochs=args.short,
                           long_term_epochs=args.long, start=dict(start))
    rp = paper.search()
    paper_s = time.perf_counter() - t
    for h in rp.history[1:]:
        print(f"  netadapt iter {h['iter']}: target {h['target_ms'] * 1000:.1f} µs → "
              f"{h['latency_ms'] * 1000:.1f} µs, layer %{h['layer']} → {h['filters']} filters, "
              f"val {h['val_accuracy']:.4f} (best of {len(h['proposals'])})", flush=True)
    print(f"netadapt: {rp.extra['stop']}; {paper_s:.0f} s, {lut.measured_now} layers "
          f"measured; long-term val {rp.extra['long_term_val_accuracy']}", flush=True)

    t = time.perf_counter()
    # the same latency model: the table's sum over the primitive layers
    blocks = NetAdaptBlocksSearch(sp, seed=0, budget_ms=budget,
                                  latency_fn=lambda g: lut.predict(prepare(g)),
                                  finetune_epochs=args.short, pretrain_epochs=args.pretrain)
    rb = blocks.search(start)
    blocks_s = time.perf_counter() - t
    long_b = None
    if blocks.state is not None and args.long > 0:
        long_b = TrainingEstimator(TrainConfig(epochs=args.long, seed=0)).estimate(
            sp.instantiate(rb.assignment), init=blocks.state).val_accuracy
    changed = {k: v for k, v in rb.assignment.items() if start[k] != v}
    print(f"netadapt_blocks: {rb.epochs} iterations, {blocks_s:.0f} s, changed {changed}; "
          f"long-term val {long_b}", flush=True)

    # whole networks compiled once, measured in turns (--rounds): the load on a shared
    # machine drifts, so each round's ratio to the start network is the figure to trust
    cfg = MeasureConfig(repeats=15, min_repeat_ms=10)
    nets = {"start": base, "netadapt": paper.graph, "netadapt_blocks": sp.instantiate(
        rb.assignment)}
    compiled = {k: compile_graph(g, "host") for k, g in nets.items()}
    rounds: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.rounds):
        for k, c in compiled.items():
            rounds[k].append(float(measure_compiled(c, cfg).median_ms or float("nan")))
    measured = {k: round(float(np.median(v)) * 1000, 1) for k, v in rounds.items()}
    ratio = {k: round(float(np.median(np.array(v) / np.array(rounds["start"]))), 3)
             for k, v in rounds.items()}
    print(f"whole networks measured ({args.rounds} rounds, µs): {rounds}", flush=True)

    def rounded(v):
        return None if v is None else round(float(v), 4)

    out = {"start": args.start, "start_us": round(lat0 * 1000, 1),
           "start_measured_us": measured["start"], "budget_us": round(budget * 1000, 1),
           "start_acc": rounded(r0.val_accuracy),
           "netadapt": {"lut_us": round(rp.extra["latency_ms"] * 1000, 1),
                        "measured_us": measured["netadapt"],
                        "measured_ratio": ratio["netadapt"], "met": rp.extra["met"],
                        "iterations": rp.epochs, "short_acc": rounded(
                            rp.extra["short_term_val_accuracy"]),
                        "long_acc": rounded(rp.extra["long_term_val_accuracy"]),
                        "search_s": round(paper_s, 1), "widths": rp.extra["widths"],
                        "start_widths": rp.extra["start_widths"]},
           "netadapt_blocks": {"lut_us": round(rb.extra["latency_ms"] * 1000, 1),
                               "measured_us": measured["netadapt_blocks"],
                               "measured_ratio": ratio["netadapt_blocks"],
                               "met": rb.extra["met"], "iterations": rb.epochs,
                               "short_acc": rounded(rb.extra["val_accuracy"]),
                               "long_acc": rounded(long_b), "search_s": round(blocks_s, 1),
                               "changed": changed},
           "lut_layers_measured": lut.measured_now, "lut_median_cv": _median_cv(args.lut),
           "settings": {"reduction": args.reduction, "short": args.short, "long": args.long,
                        "pretrain": args.pretrain, "budget": args.budget},
           "wall_s": round(time.perf_counter() - t_all, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
