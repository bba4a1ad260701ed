"""PNAS (progressive SMBO) and BANANAS (predictor-guided search) on NB201 and MnasNet."""

from __future__ import annotations

import numpy as np
import pytest

from nasir.bench.nb201_table import NB201Table
from nasir.errors import SpecError
from nasir.passes import analyze
from nasir.passes.hashing import assignment_hash
from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.pnas import NullOpOrder, PrefixOrder, complexity_order
from nasir.strategies.surrogates.tables import metric_terms

FAST = {"epochs": 60, "members": 3, "hidden": 16}


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


@pytest.fixture(scope="module")
def table():
    return NB201Table.load()


def _drive(strategy, table, queries):
    """Propose one at a time and feed back table accuracy, like the NB201 runner."""
    got = []
    for _ in range(queries):
        a = strategy.propose(1)[0]
        got.append(a)
        strategy.feedback(a, {"accuracy": table.peek(a) / 100})
    return got


def test_registry_and_bad_options(nb201):
    assert type(make_strategy("pnas", nb201, seed=0)).__name__ == "PNAS"
    assert type(make_strategy("bananas", nb201, seed=0)).__name__ == "Bananas"
    for name, opts in [("pnas", {"beam": 0}), ("bananas", {"acquisition": "ei"}),
                       ("bananas", {"batch": 0}), ("pnas", {"surrogate": "gp"}),
                       ("bananas", {"bounds": {"flops": 1}}),
                       ("bananas", {"bounds": {"latency_ms": 1.0}}), ("pnas", {"nope": 1}),
                       ("pnas", {"first": 0})]:
        with pytest.raises(SpecError):
            make_strategy(name, nb201, seed=0, **opts)


def test_null_op_order(nb201):
    order = complexity_order(nb201)
    roots = order.roots()
    assert len(roots) == 24 and {order.level(r) for r in roots} == {1}
    kids = order.children(roots[0])
    assert len(kids) == 20 and {order.level(r) for r in kids} == {2}
    assert ((kids != roots[0]).sum(1) == 1).all()
    assert len(order.children(nb201.indices(nb201.reference("all_conv3x3")))) == 0
    with pytest.raises(SpecError, match="complexity order"):
        NullOpOrder(get_space("mnasnet"))
    with pytest.raises(SpecError, match="complexity order"):
        complexity_order(get_space("mnasnet"))


def test_prefix_order_on_the_pnas_cell_space():
    sp = get_space("pnas", input_shape=(1, 8, 8), num_classes=10)
    order = complexity_order(sp)
    assert type(order) is PrefixOrder and order.max_level == 5
    roots = order.roots()
    assert len(roots) == 2 * 8 * 2 * 8 and {order.level(r) for r in roots} == {1}
    kids = order.children(roots[37])
    assert len(kids) == 3 * 8 * 3 * 8 - 1 and {order.level(r) for r in kids} == {2}
    assert (kids[:, :4] == roots[37][:4]).all() and (kids[:, 8:] == 0).all()
    s = make_strategy("pnas", sp, seed=0, beam=2, **FAST)
    first = s.propose(3)
    assert all(order.level(sp.indices(a)) == 1 for a in first)


@pytest.mark.parametrize("name, opts", [("pnas", {"beam": 6, **FAST}),
                                        ("bananas", {"init": 6, "batch": 3, **FAST})])
def test_replay_proposes_the_same_next_assignments(nb201, table, name, opts):
    s = make_strategy(name, nb201, seed=3, **opts)
    _drive(s, table, 30)
    again = make_strategy(name, nb201, seed=3, **opts)
    again.replay(s.state()["history"])
    assert again.propose(4) == s.propose(4)


def test_pnas_grows_levels_and_never_repeats(nb201, table):
    s = make_strategy("pnas", nb201, seed=0, beam=5, **FAST)
    order = s.order
    got = _drive(s, table, 40)
    levels = [order.level(nb201.indices(a)) for a in got]
    assert levels[0] == 1 and max(levels) == 6
    assert levels == sorted(levels)
    hashes = [assignment_hash(nb201, a) for a in got]
    assert len(set(hashes)) == len(hashes)


def test_bananas_proposals_are_new_and_guided(nb201, table):
    s = make_strategy("bananas", nb201, seed=1, init=8, batch=4, **FAST)
    got = _drive(s, table, 36)
    hashes = [assignment_hash(nb201, a) for a in got]
    assert len(set(hashes)) == len(hashes)
    sources = [a.provenance.get("source") for a in got]
    assert sources[:8] == ["uniform"] * 8 and sources[8:].count("acquisition") >= 24
    assert s.fits >= 6


def test_guided_searches_beat_random_on_nb201(nb201, table):
    best = {}
    for name, opts in [("random", {}), ("bananas", {"init": 8, "batch": 4, **FAST}),
                       ("pnas", {"beam": 6, **FAST})]:
        best[name] = np.mean([max(table.peek(a) for a in
                                  _drive(make_strategy(name, nb201, seed=k, **opts), table, 60))
                              for k in range(3)])
    assert best["bananas"] > best["random"] and best["pnas"] > best["random"]


def test_bananas_filters_bounds_before_evaluation(nb201, table):
    macs = metric_terms(nb201, "macs")
    bound = float(np.median(macs.values)) * 6 + macs.constant
    s = make_strategy("bananas", nb201, seed=0, init=4, batch=3, bounds={"macs": bound}, **FAST)
    for a in _drive(s, table, 14):
        assert analyze(nb201.instantiate(a))["macs"] <= bound


def test_bananas_on_mnasnet_with_macs_bound():
    sp = get_space("mnasnet", input_shape=(3, 32, 32), num_classes=10)
    bound = 4e6
    s = make_strategy("bananas", sp, seed=0, init=3, batch=2, pool=300,
                      bounds={"macs": bound}, **FAST)
    for k in range(7):
        a = s.propose(1)[0]
        m = analyze(sp.instantiate(a))["macs"]
        assert m <= bound
        s.feedback(a, {"accuracy": 1.0 - m / 1e7 + 0.01 * k})


DIGITS = {"input_shape": (1, 8, 8), "num_classes": 10, "stem": "cifar", "filters": 8,
          "cells": 3, "dropout": 0.0}


def _cell(sp, blocks, settings):
    """A progressive-space assignment with ``blocks`` built blocks from (in, op) pairs."""
    a = {"cell_blocks": str(blocks)}
    for b, (ia, oa, ib, ob) in enumerate(settings):
        a.update({f"cell_b{b}_in_a": ia, f"cell_b{b}_op_a": oa, f"cell_b{b}_in_b": ib,
                  f"cell_b{b}_op_b": ob})
    return sp.check(a)


def test_progressive_pnas_space_builds_real_b_block_cells():
    sp = get_space("pnas", progressive=True, **DIGITS)
    plain = get_space("pnas", **DIGITS)
    assert sp.decisions[0].label == "cell_blocks" and len(sp.decisions) == 21
    for big, small in [(sp, plain), (get_space("pnas", progressive=True), get_space("pnas"))]:
        fa = analyze(big.instantiate(big.reference("pnasnet_5")))
        fb = analyze(small.instantiate(small.reference("pnasnet_5")))
        assert (fa["params"], fa["macs"]) == (fb["params"], fb["macs"])
    blocks = [(0, "sep_conv_3x3", 1, "max_pool_3x3"), (2, "identity", 0, "avg_pool_3x3"),
              (3, "sep_conv_5x5", 1, "dil_conv_3x3")]
    edges, facts = [], []
    for b in (1, 2, 3):
        a = _cell(sp, b, blocks[:b])
        g = sp.instantiate(a)
        assert g.active_decisions == {"cell_blocks"} | {
            f"cell_b{k}_{x}" for k in range(b) for x in ("in_a", "op_a", "in_b", "op_b")}
        edges.append(sum(n.op.name == "cell_edge" for n in g.nodes()))
        facts.append(analyze(g)["params"])
        # later blocks are not built: their settings change nothing
        other = _cell(sp, b, blocks[:b] + [(1, "sep_conv_7x7", 0, "max_pool_3x3")] * (5 - b))
        assert assignment_hash(sp, other) == assignment_hash(sp, a)
    assert edges == [2 * 3, 4 * 3, 6 * 3] and facts[0] < facts[1] < facts[2]
    for bad in [{"stem": "tiny"}, {"blocks": 0}, {"ops": ("conv_9x9",)}]:
        with pytest.raises(SpecError):
            get_space("pnas", progressive=True, **{**DIGITS, **bad})


def test_prefix_order_grows_cells_block_by_block():
    sp = get_space("pnas", progressive=True, **DIGITS)
    order = complexity_order(sp)
    assert type(order) is PrefixOrder and order.count == 0 and order.max_level == 5
    roots = order.roots()
    assert len(roots) == 2 * 8 * 2 * 8 and {order.level(r) for r in roots} == {1}
    kids = order.children(roots[37])
    assert len(kids) == 3 * 8 * 3 * 8 and {order.level(r) for r in kids} == {2}
    assert (kids[:, 1:5] == roots[37][1:5]).all() and (kids[:, 9:] == 0).all()
    # the surrogate input is shared by blocks: a 2-block cell repeating its 1-block
    # parent's block encodes like the parent; position-wise one-hots would not
    twin = kids[(kids[:, 5:9] == roots[37][1:5]).all(1)]
    assert len(twin) == 1
    X = order.features(np.stack([roots[37], twin[0], kids[0]]))
    assert np.allclose(X[0], X[1]) and not np.allclose(X[0], X[2])
    with pytest.raises(SpecError, match="block-count"):
        PrefixOrder(sp, count="cell_b0_op_a")
    assert PrefixOrder(get_space("pnas", **DIGITS)).features(roots) is None

    s = make_strategy("pnas", sp, seed=0, beam=2, first=4, **FAST)
    first = s.propose(4)
    assert [order.level(sp.indices(a)) for a in first] == [1] * 4
    for k, a in enumerate(first):
        s.feedback(a, {"accuracy": 0.5 + 0.1 * k})
    nxt = s.propose(2)
    assert [order.level(sp.indices(a)) for a in nxt] == [2, 2]
    best = [sp.indices(first[-1])[1:5], sp.indices(first[-2])[1:5]]
    assert all(sp.indices(a)[1:5] in best and "pnas_pred" in a.provenance for a in nxt)


@pytest.mark.slow
def test_pnas_with_the_training_estimator_on_digits():
    """A real progressive search: every trial trains a PNAS network on 8×8 digits."""
    from nasir.runtime.estimators import TrainingEstimator

    sp = get_space("pnas", progressive=True, blocks=2, **DIGITS)
    est = TrainingEstimator({"epochs": 1, "batch_size": 16})
    s = make_strategy("pnas", sp, seed=0, beam=2, first=3, **FAST)
    for _ in range(5):
        (a,) = s.propose(1)
        s.feedback(a, {"accuracy": est.evaluate(sp, a, seed=0)["accuracy"]})
    rep = s.report()
    assert sorted(rep) == [1, 2] and [rep[1]["trained"], rep[2]["trained"]] == [3, 2]
    # chance is 0.1: the CIFAR stem keeps 8×8 maps, so one epoch learns the digits
    assert all(m["accuracy"] > 0.6 for _, m in s.results), [m for _, m in s.results]
