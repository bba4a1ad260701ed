"""End to end on digits: search → derived assignment → retrain from scratch → val accuracy,
TVM host latency and MACs; against the median random child of the same space.

(The judge of issues 9 and 21, called ``oneshot_quality.py`` until issue 22; the fair judge
— NB201 CIFAR-10 table accuracy against random search given the same compute — is
``benchmarks/oneshot_quality.py`` now.)

Spaces (each method on the kind of space its paper searched):

* ``nb201`` (1×8×8, C=8, one cell per stage; the real weight-sharing supernet): ``darts``
  (the paper's method with the official code's settings, second order), ``darts_first_order``,
  ``darts_pt`` (DARTS-PT selection on 256 images on the digits-tuned search; ``darts_pt_all``
  scores the perturbations on the whole architecture half; ``darts_argmax``, the same
  search derived by the argmax, for the collapse question) and ENAS (150 epochs, the
  paper's);
* ``tiny_proxyless`` (the per-layer MBConv space of ProxylessNAS at digits size, ``zero``
  ops skip residual layers): ``fbnet`` (the paper's soft Gumbel mixture), ``fbnet_gdas``
  (straight-through single path), ``proxylessnas`` (the official code's loss) and
  ``proxylessnas_penalty`` (times ``max(1, E/T)^4``) with their latency-aware losses over
  the TVM per-layer table, corrected by an affine fit on ``CALIB`` whole children
  measured with TVM (printed). Both ProxylessNAS variants search at the same target ``T``:
  the random children's median measured latency (binding for about half the space;
  ``ONESHOT_PROXYLESS_T=loose`` gives the dearest calibration child, as before issue 21),
  and each record says whether the child met it.
* ``nb201_latency`` (NB201 again, latency = the LUT's additive model in µs): the same four
  FBNet / ProxylessNAS names as ``*_nb201`` — a cheaper judge where an MBConv child costs
  too much (a loaded machine).

Per space:

* Random baseline: ``RANDOM`` uniform random children (rng 100), each trained from scratch
  with every training seed in ``TRAIN_SEEDS`` (training estimator, ``TRAIN_EPOCHS``
  epochs, Adam 3e-3); a child's score is its mean over the training seeds; the baseline is
  the median child score. Their measured latencies are printed too.
* Each method searches with search seeds 0..SEEDS-1 (its default epochs); its derived
  child is trained with the same training seeds and budget and scored the same way. No
  setting was chosen on these seeds (settings were probed on search seeds 10-12).
* Latency: TVM host, whole compiled child (median of 7), one TVM thread
  (``TVM_NUM_THREADS=1`` unless set: the machine is shared). For the accuracy runs FBNet
  has no target and ProxylessNAS a loose one (the dearest calibration child); then each,
  and FBNet with its own latency term off (``beta=0``, only the target constraint acts),
  runs at two targets that bind by construction (``TARGET_FRACTIONS`` of the way from
  the cheapest calibration child to the method's own unconstrained child, search seed
  0); the derived children are measured against ``T``. ``ONESHOT_ONLY_TARGETS=1`` runs
  the calibration and this part alone; ``ONESHOT_NO_TARGETS=1`` leaves it out;
  ``ONESHOT_METHODS=a,b`` picks methods; ``ONESHOT_TRAIN_SEEDS=n`` and
  ``ONESHOT_RANDOM=n`` change the number of training seeds and random children;
  ``ONESHOT_NB201_NO_LATENCY=1`` leaves NB201's TVM measurements out (nan);
  ``ONESHOT_MODEL_LATENCY=1`` uses the uncalibrated additive LUT model as the MBConv
  latency (nothing compiled whole: for a loaded machine); ``ONESHOT_RANDOM=0`` with
  ``ONESHOT_BASELINE_NB201=x`` / ``ONESHOT_BASELINE_TINY_PROXYLESS=x`` takes the random
  median from an earlier run (the rng-100 children train deterministically).
* NB201 rank: where the derived cell's CIFAR-10 accuracy ranks in ``NB201Table``
  (1 = best of 15,625); skip / none edge counts (the all-skip collapse).

    .venv/bin/python benchmarks/oneshot_children.py [SEEDS]

Last line: JSON summary.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

# one TVM worker thread: on a shared machine a spinning 2-thread pool measures the load,
# not the network (set before TVM starts its runtime)
os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np
import torch

from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.tvm.lut import LatencyLUT
from nasir.backends.tvm.measure import MeasureConfig
from nasir.bench.nb201_table import NB201Table
from nasir.passes.sampling import sample
from nasir.spaces import get_space
from nasir.strategies.oneshot.common import (
    additive_latency,
    calibrate_rows,
    decision_latency,
    tvm_measure_us,
)
from nasir.strategies.oneshot.darts import DartsSearch
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

SEEDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
#: DARTS, FBNet, ProxylessNAS (``ONESHOT_SEARCH_EPOCHS``); ENAS runs its default (150)
SEARCH_EPOCHS = int(os.environ.get("ONESHOT_SEARCH_EPOCHS", "8"))
TRAIN_EPOCHS = 5
TRAIN_SEEDS = tuple(range(int(os.environ.get("ONESHOT_TRAIN_SEEDS", "3"))))
RANDOM = int(os.environ.get("ONESHOT_RANDOM", "12"))
CALIB = 6
#: latency targets as fractions of the way from the cheapest calibration child to the
#: method's own child without a binding target (the loose target of the accuracy runs is
#: the dearest calibration child)
TARGET_FRACTIONS = (0.75, 0.5, 0.25)
#: methods searching ``tiny_proxyless`` (they need its calibrated latency rows)
MBCONV_METHODS = {"fbnet", "fbnet_gdas", "proxylessnas", "proxylessnas_penalty"}


def main() -> None:
    torch.set_num_threads(1)
    nb201 = get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=8,
                      cells_per_stage=1)
    mbconv = get_space("tiny_proxyless")
    table = NB201Table.load()
    only = os.environ.get("ONESHOT_METHODS")
    wanted = set(only.split(",")) if only else None
    summary: dict = {"train_seeds": list(TRAIN_SEEDS), "random_children": RANDOM}

    meas, raw, rows, lo, t_loose = mbconv_latency(mbconv, wanted, summary)
    if os.environ.get("ONESHOT_ONLY_TARGETS"):
        print(json.dumps({"targets": run_targets(mbconv, rows, raw, meas, lo, t_loose)}))
        return
    nb_meas = tvm_measure_us(nb201, MeasureConfig(repeats=7, min_repeat_ms=5))
    if os.environ.get("ONESHOT_NB201_NO_LATENCY"):  # accuracy only (a loaded machine)
        def nb_meas(a):
            return float("nan")

    groups = method_groups(nb201, mbconv, meas, nb_meas, rows, t_loose, summary)
    free: dict = {}
    for space_name, (sp, measure, makers) in groups.items():
        if wanted is not None:
            makers = {k: v for k, v in makers.items() if k in wanted}
        if makers:
            run_space(space_name, sp, measure, makers, summary, free,
                      table if sp is nb201 else None)
    if os.environ.get("ONESHOT_NO_TARGETS"):
        print(json.dumps(summary))
        return
    summary["targets"] = run_targets(mbconv, rows, raw, meas, lo, t_loose, free)
    print(json.dumps(summary))


def method_groups(nb201, mbconv, meas, nb_meas, rows, t_loose, summary: dict) -> dict:
    """space name → (space, latency measure, {method: seed → search})."""
    def t_proxyless(space_name: str = "tiny_proxyless") -> float:
        """ProxylessNAS' T: the random median latency of its space (known once its random
        baseline ran), or the loose one."""
        if os.environ.get("ONESHOT_PROXYLESS_T") == "loose":
            return t_loose
        return float(summary[space_name]["random_median_lat_us"])

    nb_cache: dict = {}

    def nb_rows() -> dict:
        """NB201's per-option latency rows: the TVM per-layer LUT's additive model (µs)."""
        if not nb_cache:
            lut = LatencyLUT("runs/oneshot_lut.db", "host", config=MeasureConfig(
                repeats=5, min_repeat_ms=2))
            nb_cache.update({k: v * 1000 for k, v in decision_latency(nb201, lut).items()})
        return nb_cache

    def nb_latency(cls, variant, **kw):
        """FBNet / ProxylessNAS on NB201 (a cheaper judge than the MBConv space)."""
        def make(s):
            t = {"target_us": t_proxyless("nb201_latency")} if cls is ProxylessSearch else {}
            return cls(nb201, seed=s, variant=variant, epochs=SEARCH_EPOCHS,
                       latency_rows=nb_rows(), **t, **kw)
        return make

    def darts(variant, **kw):
        return lambda s: DartsSearch(nb201, seed=s, variant=variant, epochs=SEARCH_EPOCHS,
                                     **kw)

    def latency(cls, variant, **kw):
        return lambda s: cls(mbconv, seed=s, variant=variant, epochs=SEARCH_EPOCHS,
                             latency_rows=rows, **kw)

    def proxyless(variant):
        return lambda s: ProxylessSearch(mbconv, seed=s, variant=variant,
                                         epochs=SEARCH_EPOCHS, latency_rows=rows,
                                         target_us=t_proxyless())

    return {
        "nb201": (nb201, nb_meas, {
            "darts": darts("darts"),
            "darts_first_order": darts("darts_first_order"),
            "darts_pt": darts("darts_pt"),
            "darts_pt_all": darts("darts_pt", pt_images=None),
            "darts_argmax": darts("darts_pt", select="argmax"),
            # the settings the notes' figures were measured with (before issue 21)
            "enas": lambda s: EnasSearch(nb201, seed=s, variant="enas_adam")}),
        "tiny_proxyless": (mbconv, meas, {
            "fbnet": latency(FBNetSearch, "fbnet"),
            "fbnet_gdas": latency(FBNetSearch, "fbnet_gdas"),
            "proxylessnas": proxyless("proxylessnas"),
            "proxylessnas_penalty": proxyless("proxylessnas_penalty")}),
        "nb201_latency": (nb201, lambda a: additive_latency(nb201, nb_rows(), a), {
            "fbnet_nb201": nb_latency(FBNetSearch, "fbnet"),
            "fbnet_gdas_nb201": nb_latency(FBNetSearch, "fbnet_gdas"),
            "proxylessnas_nb201": nb_latency(ProxylessSearch, "proxylessnas"),
            "proxylessnas_penalty_nb201": nb_latency(ProxylessSearch,
                                                     "proxylessnas_penalty")}),
    }


def mbconv_latency(mbconv, wanted, summary: dict):
    """``(measure, raw rows, rows, cheapest µs, loose T)`` of the MBConv space: TVM
    measurements and LUT rows calibrated on whole children (when an MBConv method runs),
    or the additive LUT model alone (``ONESHOT_MODEL_LATENCY``)."""
    # latency rows of the MBConv space (FBNet, ProxylessNAS), only when one of them runs
    meas = tvm_measure_us(mbconv, MeasureConfig(repeats=7, min_repeat_ms=5))
    raw = rows = None
    lo = t_loose = 0.0
    model_only = bool(os.environ.get("ONESHOT_MODEL_LATENCY"))
    if model_only:  # a loaded machine: the LUT's additive model, nothing measured whole
        lut = LatencyLUT("runs/oneshot_lut.db", "host", config=MeasureConfig(
            repeats=5, min_repeat_ms=2))
        raw = rows = {k: v * 1000 for k, v in decision_latency(mbconv, lut).items()}

        def meas(a):
            return additive_latency(mbconv, raw, a)

        t_loose = max(meas(dict(a)) for a in sample(mbconv, np.random.default_rng(0), 50))
        summary["latency"] = "additive LUT model (µs), not measured whole networks"
    elif wanted is None or wanted & MBCONV_METHODS or os.environ.get("ONESHOT_ONLY_TARGETS"):
        lut = LatencyLUT("runs/oneshot_lut.db", "host", config=MeasureConfig(repeats=5,
                                                                           min_repeat_ms=2))
        t = time.perf_counter()
        raw = {k: v * 1000 for k, v in decision_latency(mbconv, lut).items()}
        cal = calibrate_rows(mbconv, raw, meas, children=CALIB, seed=0)
        rows = cal.apply(raw)
        print(f"tiny_proxyless latency table + calibration ({CALIB} children, "
              f"{time.perf_counter() - t:.0f}s): measured ≈ {cal.scale:.3f} · additive + "
              f"{cal.offset:.0f} µs; points (additive, measured) "
              f"{[(round(a), round(b)) for a, b in cal.points]}", flush=True)
        lo, hi = cal.points[0][1], cal.points[1][1]  # cheapest / dearest child, measured
        t_loose = hi
        summary["calibration"] = {"scale": round(cal.scale, 4),
                                  "offset_us": round(cal.offset, 1),
                                  "cheapest_us": round(lo, 1), "dearest_us": round(hi, 1)}
    return meas, raw, rows, lo, t_loose


def run_space(space_name, sp, measure, makers, summary: dict, free: dict, table) -> None:
    """Random baseline of one space, then each method's searches, scored alike (seed-0
    results kept in ``free`` for the targets part). ``table``: NB201's (ranks) or None."""
    all_acc = table.all_accuracies() if table is not None else None

    def score(a):
        accs, macs = [], 0
        for ts in TRAIN_SEEDS:
            r = TrainingEstimator(TrainConfig(epochs=TRAIN_EPOCHS, seed=ts)).estimate(
                sp.instantiate(a))
            accs.append(r.val_accuracy)
            macs = r.macs
        return float(np.mean(accs)), accs, macs

    def rank(a):
        return int((all_acc > table.peek(a)).sum()) + 1 if table is not None else None

    t = time.process_time()
    rnd, rnd_lat = [], []
    for a in sample(sp, np.random.default_rng(100), RANDOM):
        m, accs, macs = score(a)
        lat = measure(a)
        rnd.append(m)
        rnd_lat.append(lat)
        print(f"{space_name} random {m:.4f} {[round(x, 3) for x in accs]} "
              f"{lat:.0f}µs rank {rank(a)} {a.text()}", flush=True)
    given = os.environ.get(f"ONESHOT_BASELINE_{space_name.upper()}")
    if given is not None:  # a random median measured before (training is deterministic)
        base = float(given)
        lats = [measure(a) for a in sample(sp, np.random.default_rng(100), 12)]
        print(f"{space_name}: random median {base:.4f} given; median latency of the 12 "
              f"random children {statistics.median(lats):.0f} µs", flush=True)
        summary[space_name] = {"random_median_acc": base, "random_baseline": "given",
                               "random_median_lat_us": round(statistics.median(lats), 1)}
    else:
        child_cpu = (time.process_time() - t) / (RANDOM * len(TRAIN_SEEDS))
        base = statistics.median(rnd)
        print(f"{space_name}: median random child (mean over training seeds "
              f"{TRAIN_SEEDS}): {base:.4f} (range {min(rnd):.4f}-{max(rnd):.4f}), median "
              f"latency {statistics.median(rnd_lat):.0f} µs; one child training "
              f"{TRAIN_EPOCHS} epochs: {child_cpu:.2f} CPU s", flush=True)
        summary[space_name] = {"random_median_acc": round(base, 4),
                               "random_median_lat_us": round(statistics.median(rnd_lat), 1)}
    out: dict = {m: [] for m in makers}
    for s in range(SEEDS):
        for m, make in makers.items():
            t = time.process_time()
            res = make(s).search()
            cpu = time.process_time() - t
            a = res.assignment
            if s == 0:
                free[m] = res
            mean, accs, macs = score(a)
            lat = measure(a)
            rec = {"seed": s, "acc": round(mean, 4), "accs": [round(x, 3) for x in accs],
                   "beats": mean > base, "macs": macs, "lat_us": round(lat, 1),
                   "search_cpu_s": round(cpu, 1), "arch": a.text(),
                   "variant": res.extra.get("variant"),
                   "changed": res.extra.get("changed")}
            if res.extra.get("target_us") is not None:
                rec |= {"target_us": round(res.extra["target_us"], 1),
                        "met_target": lat <= res.extra["target_us"]}
            if table is not None:
                rec |= {"rank": rank(a), "cifar10": table.peek(a),
                        "skip": sum(v == "skip_connect" for v in a.values()),
                        "none": sum(v == "none" for v in a.values())}
            else:
                rec["zero"] = sum(v == "zero" for v in a.values())
            if "arch_probs" in res.extra and m == "darts_argmax":
                probs = res.extra["arch_probs"].values()
                rec["max_prob"] = round(max(max(v) for v in probs), 3)
                rec["skip_prob"] = round(float(np.mean([v[1] for v in probs])), 3)
            print(m, json.dumps(rec), flush=True)
            rec["settings"] = res.extra.get("settings")
            out[m].append(rec)
    for m in makers:
        accs = [r["acc"] for r in out[m]]
        med = statistics.median(accs)
        print(f"{m:>13} ({space_name}): per search seed {accs} (median {med:.4f}) vs "
              f"random median {base:.4f}: beats {sum(r['beats'] for r in out[m])}/"
              f"{len(accs)}" + (f"; NB201 ranks {[r['rank'] for r in out[m]]}"
                                if table is not None else ""), flush=True)
        summary[m] = {"space": space_name, "acc": accs, "median_acc": round(med, 4),
                      "mean_acc": round(float(np.mean(accs)), 4),
                      "beats": sum(r["beats"] for r in out[m]),
                      "beats_random": med > base,
                      "lat_us": [r["lat_us"] for r in out[m]],
                      "macs": [r["macs"] for r in out[m]],
                      "search_cpu_s": [r["search_cpu_s"] for r in out[m]],
                      "settings": out[m][0]["settings"] if out[m] else None}
        if any("met_target" in r for r in out[m]):
            summary[m]["target_us"] = out[m][0]["target_us"]
            summary[m]["met_target"] = sum(bool(r.get("met_target")) for r in out[m])
        if table is not None:
            summary[m]["ranks"] = [r["rank"] for r in out[m]]


def run_targets(sp, rows, raw, meas, lo, t_loose, done: dict | None = None) -> dict:
    """FBNet, ProxylessNAS and ``fbnet_constraint`` (FBNet with its own latency term off,
    ``beta=0``: only the target constraint acts), search seed 0.

    Each method first searches without a binding target (FBNet: none; ProxylessNAS: the
    loose one) and its child's latency ``L0`` is measured; then it searches at targets
    ``TARGET_FRACTIONS`` of the way from the cheapest calibration child ``lo`` to ``L0`` —
    targets that bind by construction, so "lowering T lowers the latency" is put to the
    test rather than met by a target above the unconstrained child. ``done``: seed-0
    searches already run with the free settings (reused, not repeated)."""
    targets: dict = {}
    runs: tuple[tuple[str, type, dict, float | None], ...] = (
        ("fbnet", FBNetSearch, {}, None), ("proxylessnas", ProxylessSearch, {}, t_loose),
        ("proxylessnas_penalty", ProxylessSearch, {"variant": "proxylessnas_penalty"},
         t_loose),
        ("fbnet_constraint", FBNetSearch, {"beta": 0.0}, None))
    for name, cls, kw, t0 in runs:
        def search(t_us, cls=cls, kw=kw):
            return cls(sp, seed=0, epochs=SEARCH_EPOCHS, latency_rows=rows, target_us=t_us,
                       **kw).search()

        prior = (done or {}).get(name)
        if prior is not None and prior.extra.get("target_us") != t0:
            prior = None  # searched at another target (ProxylessNAS at the random median)
        free = prior or search(t0)
        l0 = meas(free.assignment)
        targets[f"{name}@free"] = {"measured_us": round(l0, 1), "target_us": t0,
                                   "arch": free.assignment.text()}
        print(f"{name} without a binding target: measured {l0:.1f}µs, "
              f"{free.assignment.text()}", flush=True)
        if l0 <= lo * 1.05:
            print(f"{name}: its free child is already the cheapest measured ({lo:.1f}µs); "
                  "no binding target exists", flush=True)
            continue
        for f in TARGET_FRACTIONS:
            t_us = round(lo + f * (l0 - lo), 1)
            res = search(t_us)
            lat = meas(res.assignment)
            rec = {"target_us": t_us, "measured_us": round(lat, 1), "met": lat <= t_us,
                   "within_10pct": lat <= 1.1 * t_us,
                   "model_us": round(additive_latency(sp, rows, res.assignment), 1),
                   "uncalibrated_us": round(additive_latency(sp, raw, res.assignment), 1),
                   "arch": res.assignment.text()}
            targets[f"{name}@{t_us:g}"] = rec
            print(f"{name} T={t_us:g}µs: measured {rec['measured_us']}µs "
                  f"({'≤ T' if lat <= t_us else f'{lat / t_us - 1:+.0%} over T'}), "
                  f"calibrated model {rec['model_us']}µs, uncalibrated "
                  f"{rec['uncalibrated_us']}µs, {rec['arch']}", flush=True)
    return targets


if __name__ == "__main__":
    main()
