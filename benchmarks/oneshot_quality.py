"""The fair judge of one-shot search (issue 22): each method's derived NAS-Bench-201 cell,
looked up in the CIFAR-10 table, against random search given the same compute.

For every search seed ``s`` and every method (``darts``, ``enas``, ``fbnet``,
``proxylessnas``; ``darts_pt`` as a variant row), on the NB201 space at the proxy data's
size (digits: 1×8×8, C = 8, one cell per stage, as nasir's other one-shot figures):

1. the method searches (its in-process ``search()``, the variant's settings, the epochs of
   :data:`METHODS` scaled to this machine's budget, ``--epochs`` overrides); its search
   cost ``B_m,s`` is measured on ``--clock``; the derived cell's CIFAR-10 test accuracy
   comes from nasir's NB201 table estimator (the *true* quality: the searcher never sees
   it);
2. random search with the same compute: uniformly random NB201 cells (rng ``10000 + s``),
   each trained on the same proxy data by nasir's training estimator (``--child-epochs``,
   the runner's default child budget, training seed ``s``) while its cost is measured on
   the same clock; the children whose cumulative cost fits in ``B_m,s`` are random
   search's history, its pick the best by proxy validation accuracy, and that cell's
   CIFAR-10 accuracy is read from the same table. When not even one child fits, random
   search's pick is its first cell, unevaluated (a guess costs nothing).

The random cells of seed ``s`` are one sequence shared by the methods (trained once, up
to the largest budget of the seed; each method's random search is the prefix its budget
pays for: common random numbers, half the cost). Searches and random children run in the
same process, on the same ``--threads`` torch threads, seed by seed, so both see the same
machine. ``--clock cpu`` (the default) counts the process' CPU seconds: with one thread
that is what a wall clock reads on an idle machine, and it does not charge one side for
the load other jobs put on a shared machine; ``--clock wall`` counts wall seconds.

Figures per method over the seeds (accuracies in %): ``mean``, ``std`` (sample std,
ddof 1) of the derived cells' table accuracy; ``random_mean``, ``random_std`` of the
equal-compute random picks'; ``diff = mean - random_mean``; ``se``, the standard error of
that difference of means, ``sqrt(std²/n + random_std²/n)`` (unpaired: random search's
cells do not depend on the method's); ``beats_random = diff > se``. ``param_free``: the
fraction of the derived cells' edges (6 a cell) that are parameter-free ops — ``skip``
(skip_connect), ``pool`` (avg_pool_3x3), ``none`` and their ``total`` (a uniform random
cell: 0.6) — DARTS' collapse as measured; ``random_param_free`` the same of random
search's picks. ``table_mean`` is the mean CIFAR-10 accuracy over all 15,625 cells (one
random cell's expected quality).

    nice -n 10 .venv/bin/python benchmarks/oneshot_quality.py --seeds 5
    .venv/bin/python benchmarks/oneshot_quality.py --seeds 1 --methods fbnet \\
        --epochs fbnet=2 --clock wall
    # a standard set you have (files under $NASIR_DATA_DIR, see nasir.backends.torch.datasets)
    .venv/bin/python benchmarks/oneshot_quality.py --data cifar10
    # one summary of runs on disjoint seeds (--first-seed), from their logs
    .venv/bin/python benchmarks/oneshot_quality.py --merge seeds0-4.log seeds5-9.log

FBNet and ProxylessNAS search with their latency terms over NB201's per-layer TVM host
table (``runs/oneshot_lut.db``, measured once and kept; not charged to any search);
ProxylessNAS' target ``T`` is the median additive latency of 50 random cells. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: method → (search, variant, options): the variant's own settings, epochs scaled to a
#: loaded 2-core machine (one seed of all five ≈ 3-4 CPU minutes with its random search)
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "darts": ("darts", "darts", {"epochs": 20}),  # paper: 50 (second order, SGD 0.025)
    "enas": ("enas", "enas", {"epochs": 8}),  # NB201 → enas_micro; paper: 150
    "fbnet": ("fbnet", "fbnet", {}),  # 8 epochs, 2 warm-up (nasir's digits default)
    "proxylessnas": ("proxylessnas", "proxylessnas", {}),
    "darts_pt": ("darts", "darts_pt", {}),  # 8 epochs, DARTS-PT selection
}
#: NB201 ops without parameters, as reported (key → op name)
PARAM_FREE = {"skip": "skip_connect", "pool": "avg_pool_3x3", "none": "none"}


@dataclass(frozen=True)
class Child:
    """One trained random cell: its cumulative cost when it finished (clock seconds), its
    proxy validation accuracy, and its CIFAR-10 table accuracy (%)."""

    spent: float
    proxy: float
    table: float
    assignment: Mapping[str, Any]


def random_pick(children: Sequence[Child], budget: float) -> tuple[Child, int]:
    """Random search's pick at ``budget``: the best proxy accuracy among the children that
    finished within it (the first on ties), and how many did; the first child,
    unevaluated (count 0), when none did.

    >>> c = [Child(2.0, 0.5, 80.0, {}), Child(4.0, 0.9, 70.0, {}), Child(6.0, 0.95, 90.0, {})]
    >>> [(p.table, n) for p, n in (random_pick(c, b) for b in (1.0, 2.0, 5.0, 9.0))]
    [(80.0, 0), (80.0, 1), (70.0, 2), (90.0, 3)]
    """
    paid = [c for c in children if c.spent <= budget]
    if not paid:
        return children[0], 0
    return max(paid, key=lambda c: c.proxy), len(paid)


def compare(method: Sequence[float], rand: Sequence[float]) -> dict[str, Any]:
    """Mean ± sample std of both sides, their difference, its standard error (unpaired,
    ``sqrt(s_m²/n_m + s_r²/n_r)``) and ``beats_random = diff > se``.

    >>> r = compare([90.0, 92.0, 94.0], [85.0, 86.0, 87.0])
    >>> r["mean"], r["std"], r["random_mean"], r["diff"], r["beats_random"]
    (92.0, 2.0, 86.0, 6.0, True)
    >>> compare([86.0, 88.0], [85.0, 88.0])["beats_random"]
    False
    """
    def std(xs: Sequence[float]) -> float:
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    m, r = statistics.fmean(method), statistics.fmean(rand)
    se = math.sqrt(std(method) ** 2 / len(method) + std(rand) ** 2 / len(rand))
    return {"mean": round(m, 3), "std": round(std(method), 3), "random_mean": round(r, 3),
            "random_std": round(std(rand), 3), "diff": round(m - r, 3), "se": round(se, 3),
            "beats_random": bool(m - r > se)}


def param_free(cells: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Fraction of the cells' edges per parameter-free op (:data:`PARAM_FREE`) and their
    ``total``.

    >>> param_free([{"a": "none", "b": "skip_connect", "c": "nor_conv_3x3",
    ...              "d": "avg_pool_3x3"}])
    {'skip': 0.25, 'pool': 0.25, 'none': 0.25, 'total': 0.75}
    """
    ops = [op for cell in cells for op in cell.values()]
    n = {k: sum(op == name for op in ops) for k, name in PARAM_FREE.items()}
    n["total"] = sum(n.values())
    return {k: round(v / max(1, len(ops)), 3) for k, v in n.items()}


def clock_fn(kind: str) -> Callable[[], float]:
    """The clock of ``--clock``: process CPU seconds or wall seconds."""
    return time.process_time if kind == "cpu" else time.perf_counter


def judge_seed(seed: int, methods: Sequence[str], search: Callable[[str, int], Any],
               train: Callable[[Mapping[str, Any], int], float],
               draw: Callable[[np.random.Generator], Mapping[str, Any]],
               table: Callable[[Mapping[str, Any]], float], clock: Callable[[], float],
               log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """One seed: every method's search, then the shared random sequence up to the largest
    budget; method → its record. ``search(method, seed)`` returns the derived assignment,
    ``train(cell, seed)`` the proxy accuracy, ``draw(rng)`` a random cell, ``table(cell)``
    its CIFAR-10 accuracy (%)."""
    recs: dict[str, dict[str, Any]] = {}
    for m in methods:
        t = clock()
        cell = search(m, seed)
        cost = clock() - t
        recs[m] = {"seed": seed, "cost_s": round(cost, 2), "acc": round(table(cell), 3),
                   "cell": dict(cell)}
        log(f"seed {seed} {m}: {cost:.1f}s, CIFAR-10 {recs[m]['acc']:.2f} "
            f"{json.dumps(dict(cell))}")
    rng = np.random.default_rng(10_000 + seed)
    budget = max(r["cost_s"] for r in recs.values())
    children: list[Child] = []
    spent = 0.0
    while spent < budget or not children:
        cell = draw(rng)
        t = clock()
        proxy = train(cell, seed)
        spent += clock() - t
        children.append(Child(spent, proxy, round(table(cell), 3), dict(cell)))
    log(f"seed {seed} random: {len(children)} children in {spent:.1f}s, proxy "
        f"{min(c.proxy for c in children):.3f}-{max(c.proxy for c in children):.3f}")
    for m, r in recs.items():
        pick, n = random_pick(children, r["cost_s"])
        r |= {"random_acc": pick.table, "random_children": n,
              "random_cell": dict(pick.assignment)}
        log(f"seed {seed} {m}: random search ({n} children) CIFAR-10 {pick.table:.2f}")
    return recs


def summarize(records: Mapping[str, Sequence[Mapping[str, Any]]],
              settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """method → the figures of the module docstring, from its per-seed records."""
    out: dict[str, dict[str, Any]] = {}
    for m, recs in records.items():
        out[m] = {**compare([r["acc"] for r in recs], [r["random_acc"] for r in recs]),
                  "seeds": [r["seed"] for r in recs], "n": len(recs),
                  "acc": [r["acc"] for r in recs],
                  "random_acc": [r["random_acc"] for r in recs],
                  "search_s": [r["cost_s"] for r in recs],
                  "random_children": [r["random_children"] for r in recs],
                  "param_free": param_free(r["cell"] for r in recs),
                  "random_param_free": param_free(r["random_cell"] for r in recs),
                  **settings.get(m, {})}
    return out


def latency_rows(space: Any, lut_path: str) -> dict[str, np.ndarray]:
    """NB201's per-option latency rows (µs) from the TVM per-layer host table (measured
    once, kept in ``lut_path``), as the earlier one-shot judges gave FBNet and ProxylessNAS."""
    from nasir.backends.tvm.lut import LatencyLUT
    from nasir.backends.tvm.measure import MeasureConfig
    from nasir.strategies.oneshot.common import decision_latency

    lut = LatencyLUT(lut_path, "host", config=MeasureConfig(repeats=5, min_repeat_ms=2))
    return {k: v * 1000.0 for k, v in decision_latency(space, lut).items()}


def search_data_of(splits: Any, batch_size: int, seed: int) -> Any:
    """A one-shot search's data from ``splits`` (not digits): the training split cut in
    two seeded halves (weights / architecture) and the validation split, as
    :func:`nasir.strategies.oneshot.common.search_data` does for digits."""
    import torch
    from torch.utils.data import Subset

    from nasir.backends.torch.batches import device_loader
    from nasir.strategies.oneshot.common import SearchData

    idx = np.random.default_rng(seed).permutation(len(splits.train))
    half = len(idx) // 2
    g = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")

    def part(ids: np.ndarray) -> Any:
        return device_loader(Subset(splits.train, sorted(ids.tolist())), batch_size,
                             shuffle=True, generator=g, device=cpu)

    return SearchData(part(idx[:half]), part(idx[half:]),
                      device_loader(splits.val, 256, shuffle=False, generator=None,
                                    device=cpu))


def make_search(space: Any, method: str, seed: int, epochs: Mapping[str, int],
                rows: Mapping[str, np.ndarray] | None, target_us: float) -> Any:
    """The search object of ``method`` (:data:`METHODS`) on ``space`` with ``seed``."""
    from nasir.strategies.oneshot.darts import DartsSearch
    from nasir.strategies.oneshot.enas import EnasSearch
    from nasir.strategies.oneshot.fbnet import FBNetSearch
    from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

    kind, variant, opts = METHODS[method]
    opts = {**opts, **({"epochs": epochs[method]} if method in epochs else {})}
    if kind == "darts":
        return DartsSearch(space, seed=seed, variant=variant, **opts)
    if kind == "enas":
        return EnasSearch(space, seed=seed, variant=variant, **opts)
    if kind == "fbnet":
        return FBNetSearch(space, seed=seed, variant=variant, latency_rows=rows, **opts)
    return ProxylessSearch(space, seed=seed, variant=variant, latency_rows=rows,
                           target_us=target_us, **opts)


def merge(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary from the JSON lines of runs on disjoint seeds (``--merge``): per-seed
    lists concatenated, figures recomputed, fractions weighted by seeds."""
    out: dict[str, Any] = {**runs[0], "methods": {}, "merged": len(runs),
                           "seeds": sum(r["seeds"] for r in runs),
                           "wall_s": round(sum(r["wall_s"] for r in runs), 1)}
    for m in runs[0]["methods"]:
        parts = [r["methods"][m] for r in runs if m in r["methods"]]
        lists = {k: [x for f in parts for x in f[k]] for k in
                 ("acc", "random_acc", "seeds", "search_s", "random_children")}
        n = len(lists["acc"])
        out["methods"][m] = {
            **parts[0], **compare(lists["acc"], lists["random_acc"]), **lists, "n": n,
            **{key: {k: round(sum(f[key][k] * f["n"] for f in parts) / n, 3)
                     for k in parts[0][key]}
               for key in ("param_free", "random_param_free")}}
    return out


def print_table(fig: Mapping[str, Mapping[str, Any]], head: str) -> None:
    """The figures as a rich table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=head)
    for col in ("method", "search s", "CIFAR-10 %", "random %", "children", "diff ± se",
                "beats", "param-free (skip/pool/none)", "random's"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m, r in fig.items():
        pf, rpf = r["param_free"], r["random_param_free"]
        t.add_row(f"{m} ({r['variant']})", f"{statistics.fmean(r['search_s']):.1f}",
                  f"{r['mean']:.2f} ± {r['std']:.2f}",
                  f"{r['random_mean']:.2f} ± {r['random_std']:.2f}",
                  f"{statistics.fmean(r['random_children']):.1f}",
                  f"{r['diff']:+.2f} ± {r['se']:.2f}", "yes" if r["beats_random"] else "no",
                  f"{pf['total']:.2f} ({pf['skip']:.2f}/{pf['pool']:.2f}/{pf['none']:.2f})",
                  f"{rpf['total']:.2f}")
    Console(width=160).print(t)


def parse_epochs(text: str) -> dict[str, int]:
    """``--epochs darts=10,enas=5`` → ``{"darts": 10, "enas": 5}``.

    >>> parse_epochs("darts=10, enas=5"), parse_epochs("")
    ({'darts': 10, 'enas': 5}, {})
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        out[name.strip()] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default="darts,enas,fbnet,proxylessnas,darts_pt")
    p.add_argument("--epochs", default="", help="method=epochs overrides, comma-separated")
    p.add_argument("--data", default="digits", help="proxy data spec (load_data)")
    p.add_argument("--child-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--lut", default="runs/oneshot_lut.db")
    p.add_argument("--merge", nargs="+", metavar="LOG",
                   help="runs nothing: one summary from these runs' logs (last JSON lines)")
    args = p.parse_args(argv)
    if args.merge:
        runs = []
        for path in args.merge:
            with open(path, encoding="utf-8") as f:
                runs.append(json.loads([ln for ln in f if ln.startswith("{")][-1]))
        both = merge(runs)
        print_table(both["methods"], f"NB201 one-shot vs equal-compute random search: "
                                     f"{both['seeds']} seeds from {len(runs)} runs")
        print(json.dumps(both))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    epochs = parse_epochs(args.epochs)
    unknown = sorted({*methods, *epochs} - set(METHODS))
    if unknown or not methods:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")

    import torch

    from nasir.backends.torch.datasets import load_data
    from nasir.passes.sampling import sample
    from nasir.runtime.estimators import NB201TableEstimator, TrainingEstimator
    from nasir.spaces import get_space
    from nasir.strategies.oneshot.common import additive_latency

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    splits = load_data(args.data)
    space = get_space("nb201", input_shape=splits.input_shape,
                      num_classes=splits.num_classes, channels=8, cells_per_stage=1)
    digits = args.data == "digits"
    trainer = TrainingEstimator({"epochs": args.child_epochs}, threads=args.threads,
                                data=None if digits else splits)
    lookup = NB201TableEstimator()
    rows, target = None, 0.0
    if {"fbnet", "proxylessnas"} & set(methods):
        rows = latency_rows(space, args.lut)
        target = statistics.median(additive_latency(space, rows, a)
                                   for a in sample(space, np.random.default_rng(100), 50))
        print(f"latency rows from {args.lut}; ProxylessNAS target T = {target:.1f} µs")

    def search(m: str, seed: int) -> Mapping[str, Any]:
        s = make_search(space, m, seed, epochs, rows, target)
        data = None if digits else search_data_of(splits, s.settings.batch_size, seed)
        res = s.search(data)
        settings.setdefault(m, {"variant": s.variant, "changed": res.extra.get("changed")})
        return res.assignment

    def table(a: Mapping[str, Any]) -> float:
        return 100.0 * lookup.evaluate(space, a, seed=0)["accuracy"]

    def train(a: Mapping[str, Any], seed: int) -> float:
        return float(trainer.evaluate(space, a, seed=seed)["accuracy"])

    train(space.reference("resnet"), 0)  # untimed warm-up: data, kernels, allocator
    settings: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        recs = judge_seed(seed, methods, search, train, lambda rng: sample(space, rng, 1)[0],
                          table, clock_fn(args.clock),
                          log=lambda line: print(line, flush=True))
        for m, r in recs.items():
            records[m].append(r)
    fig = summarize(records, settings)
    wall = time.perf_counter() - start
    all_acc = lookup.table.all_accuracies()
    print_table(fig, f"NB201 one-shot vs equal-compute random search: {args.seeds} seeds, "
                     f"{args.data} proxy, clock {args.clock}, {wall:.0f} s wall")
    print(json.dumps({"methods": fig, "seeds": args.seeds, "first_seed": args.first_seed,
                      "data": args.data, "clock": args.clock, "threads": args.threads,
                      "child_epochs": args.child_epochs, "target_us": round(target, 1),
                      "table_mean": round(float(all_acc.mean()), 3),
                      "table_optimum": round(float(all_acc.max()), 3),
                      "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
