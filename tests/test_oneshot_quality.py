"""The fair judge's logic (``benchmarks/oneshot_quality.py``) on a fake clock, fake
searches and a fake table: equal-compute budgets, the shared random prefix, the figures.
The real searches run in the benchmark, not here."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "oneshot_quality.py"


@pytest.fixture(scope="module")
def judge() -> Iterator[Any]:
    spec = importlib.util.spec_from_file_location("oneshot_quality", PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


class FakeClock:
    """Time moves only when a fake search or training says it does."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_judge_seed_gives_random_search_the_same_compute(judge):
    clock = FakeClock()
    costs = {"slow": 10.0, "fast": 3.0}
    cells = {"slow": {"e": "nor_conv_3x3"}, "fast": {"e": "skip_connect"}}
    quality = {"nor_conv_3x3": 93.0, "skip_connect": 60.0, "none": 10.0,
               "avg_pool_3x3": 70.0, "nor_conv_1x1": 90.0}
    ops = sorted(quality)
    drawn: list[str] = []

    def search(m, seed):
        clock.now += costs[m]
        return cells[m]

    def train(cell, seed):
        clock.now += 2.0  # every child costs 2 s: 1 fits in 3 s, 5 in 10 s
        return quality[cell["e"]] / 100  # a proxy that ranks like the table

    def draw(rng):
        drawn.append(ops[int(rng.integers(len(ops)))])
        return {"e": drawn[-1]}

    recs = judge.judge_seed(0, ["slow", "fast"], search, train, draw,
                            lambda c: quality[c["e"]], clock, log=lambda line: None)
    assert recs["slow"]["cost_s"] == 10.0 and recs["fast"]["cost_s"] == 3.0
    assert len(drawn) == 5  # trained once, up to the largest budget
    assert recs["slow"]["random_children"] == 5 and recs["fast"]["random_children"] == 1
    assert recs["slow"]["random_acc"] == max(quality[o] for o in drawn)
    assert recs["fast"]["random_acc"] == quality[drawn[0]]
    assert recs["slow"]["acc"] == 93.0 and recs["fast"]["acc"] == 60.0
    # the same seed draws the same random cells
    rng = np.random.default_rng(10_000)
    again = [ops[int(rng.integers(len(ops)))] for _ in range(5)]
    assert again == drawn


def test_summary_figures_and_the_standard_error(judge):
    recs = [{"seed": s, "acc": a, "random_acc": r, "cost_s": 1.0, "random_children": 2,
             "cell": {"x": "none", "y": "nor_conv_3x3"},
             "random_cell": {"x": "avg_pool_3x3", "y": "skip_connect"}}
            for s, a, r in ((0, 90.0, 85.0), (1, 92.0, 86.0), (2, 94.0, 87.0))]
    fig = judge.summarize({"m": recs}, {"m": {"variant": "v"}})["m"]
    assert (fig["mean"], fig["std"], fig["random_mean"], fig["random_std"]) == (
        92.0, 2.0, 86.0, 1.0)
    assert fig["se"] == pytest.approx(np.sqrt(4 / 3 + 1 / 3), abs=1e-3)
    assert fig["beats_random"] and fig["variant"] == "v" and fig["n"] == 3
    assert fig["param_free"] == {"skip": 0.0, "pool": 0.0, "none": 0.5, "total": 0.5}
    assert fig["random_param_free"]["total"] == 1.0
    # within one standard error is not a win
    assert not judge.compare([86.0, 88.0], [85.0, 88.0])["beats_random"]


def test_merge_pools_runs_on_disjoint_seeds(judge):
    fig = {"acc": [90.0], "random_acc": [85.0], "seeds": [0], "n": 1, "search_s": [1.0],
           "random_children": [2], "param_free": {"total": 1.0},
           "random_param_free": {"total": 0.0}, "variant": "v"}
    run: dict[str, Any] = {"methods": {"m": fig}, "seeds": 1, "wall_s": 5}
    other = {**run, "methods": {"m": {**run["methods"]["m"], "acc": [94.0], "seeds": [1],
                                      "param_free": {"total": 0.5}}}}
    both = judge.merge([run, other])
    m = both["methods"]["m"]
    assert (m["mean"], m["n"], m["seeds"], m["param_free"]) == (92.0, 2, [0, 1], {"total": 0.75})
    assert (both["seeds"], both["wall_s"], m["variant"]) == (2, 10, "v")


def test_random_pick_counts_only_children_the_budget_paid_for(judge):
    kids = [judge.Child(2.0, 0.5, 80.0, {}), judge.Child(4.0, 0.9, 70.0, {})]
    assert judge.random_pick(kids, 1.0) == (kids[0], 0)
    assert judge.random_pick(kids, 3.9) == (kids[0], 1)
    assert judge.random_pick(kids, 4.0) == (kids[1], 2)


def test_unknown_method_is_a_usage_error(judge, capsys):
    with pytest.raises(SystemExit) as e:
        judge.main(["--methods", "darts,nope"])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
