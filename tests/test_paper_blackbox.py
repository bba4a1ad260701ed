"""Paper defaults of the black-box model-based strategies (issue 21): BANANAS with the path
encoding and independent Thompson sampling, PNAS with LSTM / MLP predictor ensembles
trained with an L1 loss and the paper profile (K = 256) scaled to a runner's budget."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from nasir.bench.nb201_table import NB201Table
from nasir.bench.runner import run_search
from nasir.errors import SpecError
from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.bananas import acquire
from nasir.strategies.pnas_predictors import plan_beam
from nasir.strategies.surrogates.kernel import Scores
from nasir.strategies.surrogates.sequence import SequenceEnsemble

#: the paper's settings with a cheaper predictor schedule, for speed
SMALL_BANANAS = {"init": 6, "batch": 4, "layers": 3, "epochs": 20}
SMALL_PNAS = {"embed": 16, "hidden": 16, "epochs": 5}


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


@pytest.fixture(scope="module")
def table():
    return NB201Table.load()


def _drive(strategy, table, queries):
    got = []
    for _ in range(queries):
        a = strategy.propose(1)[0]
        got.append(a)
        strategy.feedback(a, {"accuracy": table.peek(a) / 100})
    return got


def test_bananas_default_is_the_papers_method(nb201):
    s = make_strategy("bananas", nb201, seed=0)
    st = s.state()["settings"]
    assert st == s.settings and st["profile"] == "paper"
    assert (st["encoding"], st["acquisition"], st["acq_opt"]) == ("path", "its", "mutation")
    assert (st["surrogate"], st["members"], st["layers"], st["hidden"], st["loss"]) == (
        "deep", 5, 10, 20, "l1")
    assert (st["epochs"], st["batch_size"], st["lr"]) == (150, 32, 0.01)
    assert (st["init"], st["batch"], st["candidates"], st["mutate_top"]) == (10, 10, 100, 1)
    assert st["mutation_prob"] == pytest.approx(1 / 4)  # naszilla's rate / (6 - 2) on NB201
    assert "naszilla" in st["source"]["code"] and st["deviations"]
    old = make_strategy("bananas", nb201, seed=0, profile="nasir").settings
    assert (old["encoding"], old["acquisition"], old["acq_opt"], old["surrogate"]) == (
        "onehot", "ucb", "neighbourhood", "mlp")
    with pytest.raises(SpecError, match="profile"):
        make_strategy("bananas", nb201, profile="tuned")
    with pytest.raises(SpecError, match="cell"):
        make_strategy("bananas", get_space("mnasnet"), encoding="path")
    fallback = make_strategy("bananas", get_space("mnasnet"), seed=0).settings
    assert fallback["encoding"] == "onehot" and any("cell view" in d
                                                    for d in fallback["deviations"])


def test_its_draws_are_reproducible_per_seed_and_differ_across_seeds():
    z = np.zeros(50)
    scores = Scores(np.linspace(0, 1, 50), np.full(50, 0.3), z, z, z)
    draw = [acquire(scores, "its", np.random.default_rng(k)) for k in (0, 0, 1)]
    assert np.array_equal(draw[0], draw[1]) and not np.allclose(draw[0], draw[2])
    assert np.array_equal(acquire(scores, "its", np.random.default_rng(0),
                                  use_ridge=True), scores.ridge)  # no spread: the mean


def test_bananas_its_proposals_reproducible_per_seed(nb201, table):
    """The same results fed to BANANAS: one seed proposes the same batch twice, other
    seeds (other ITS draws and ensemble initialisations) propose other batches."""
    rng = np.random.default_rng(7)
    seen = [nb201.from_indices(r) for r in rng.integers(0, 5, size=(12, 6))]

    def batch(seed):
        s = make_strategy("bananas", nb201, seed=seed, **SMALL_BANANAS)
        for a in seen:
            s.feedback(a, {"accuracy": table.peek(a) / 100})
        got = s.propose(4)
        assert {a.provenance["source"] for a in got} == {"acquisition"}
        return [a.to_json() for a in got]

    first = batch(0)
    assert batch(0) == first
    assert any(batch(k) != first for k in (1, 2, 3))


def _toy_tokens(rng, n, head=1, block=2, blocks=3, vocab=6):
    X = rng.integers(0, vocab, size=(n, head + block * blocks))
    built = rng.integers(1, blocks + 1, size=n)
    for b in range(blocks):
        X[built <= b, head + b * block: head + (b + 1) * block] = -1
    w = np.linspace(-1, 1, vocab)
    on = X[:, head:] >= 0
    y = np.where(on, w[np.maximum(X[:, head:], 0)], 0).sum(1) / on.sum(1) + 0.3 * w[X[:, 0]]
    return X, y


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_pnas_predictors_train_with_l1_and_rank_better_than_chance(kind):
    rng = np.random.default_rng(0)
    X, y = _toy_tokens(rng, 160)
    m = SequenceEnsemble(kind, vocab=6, head=1, block=2, members=5, embed=16, hidden=16,
                         epochs=40, lr=0.01, seed=0)
    assert (m.loss, m.members) == ("l1", 5)
    m.fit(X[:80], y[:80])
    pred, spread = m.predict(X[80:])
    assert kendalltau(pred, y[80:])[0] > 0.4
    assert spread.shape == (80,) and (spread > 0).any()
    train = m.predict(X[:80])[0]
    assert np.abs(train - y[:80]).mean() < np.abs(np.median(y[:80]) - y[:80]).mean()


def test_pnas_paper_profile_records_its_settings(nb201):
    s = make_strategy("pnas", nb201, seed=0)
    st = s.state()["settings"]
    assert (st["profile"], st["beam"], st["beam_used"], st["surrogate"]) == (
        "paper", 256, 256, "lstm")
    assert (st["members"], st["loss"], st["embed"], st["hidden"]) == (5, "l1", 100, 100)
    model = s._sequence_model(0)
    assert (model.kind, model.loss, model.members) == ("lstm", "l1", 5)
    assert make_strategy("pnas", nb201, surrogate="mlp")._sequence_model(0).kind == "mlp"
    old = make_strategy("pnas", nb201, profile="nasir").settings
    assert (old["beam"], old["surrogate"], old["target"]) == (16, "onehot", "rank")
    for bad in [{"profile": "fast"}, {"surrogate": "gp"}, {"budget": 0}, {"loss": "huber"}]:
        with pytest.raises(SpecError):
            make_strategy("pnas", nb201, **bad)


def test_plan_beam_degrades_to_small_budgets():
    assert plan_beam(256, None, None, 24, 6).beam == 256
    assert plan_beam(4, None, 1000, 24, 6).beam == 4
    p = plan_beam(256, None, 150, 24, 6)
    assert p.beam == 25 and p.first is None and 24 + 5 * p.beam <= 150
    p = plan_beam(256, None, 10, 136, 5)
    assert p.first == 2 and p.beam == 2 and p.first + 4 * p.beam <= 10


def test_pnas_paper_profile_runs_under_a_tiny_budget_on_nb201(nb201, table):
    r = run_search("pnas", 3, 14, options={"budget": 14, **SMALL_PNAS})
    assert r.queries == 14 and len(r.curve) == 14 and 0 <= r.regret < 10
    s = make_strategy("pnas", nb201, seed=3, budget=14, **SMALL_PNAS)
    assert s.settings["beam"] == 256 and s.beam == s.settings["beam_used"] < 256
    levels = [s.order.level(nb201.indices(a)) for a in _drive(s, table, 14)]
    assert max(levels) == s.order.max_level == 6  # every level reached
    assert "pnas_pred" in s.results[-1][0].provenance


def test_pnas_paper_profile_grows_blocks_under_a_tiny_budget():
    sp = get_space("pnas", progressive=True, input_shape=(1, 8, 8), num_classes=10)
    s = make_strategy("pnas", sp, seed=0, budget=9, **SMALL_PNAS)
    assert (s.first, s.beam) == (1, 2) and s.tokens.block == 4 and s.tokens.head == 0
    levels = []
    for k in range(9):
        a = s.propose(1)[0]
        levels.append(s.order.level(sp.indices(a)))
        s.feedback(a, {"accuracy": 0.5 + 0.01 * ((7 * k) % 5)})
    assert levels[:1] == [1] and max(levels) == 5


@pytest.mark.parametrize("name, opts", [("bananas", SMALL_BANANAS),
                                        ("pnas", {"budget": 40, **SMALL_PNAS})])
def test_paper_defaults_replay_from_history(nb201, table, name, opts):
    s = make_strategy(name, nb201, seed=5, **opts)
    _drive(s, table, 22)
    again = make_strategy(name, nb201, seed=5, **opts)
    again.replay(s.state()["history"])
    assert again.propose(3) == s.propose(3)
    assert again.state()["settings"] == s.state()["settings"]
