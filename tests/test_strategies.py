"""Search strategies I: grid, regularized evolution, REINFORCE, PPO, MetaQNN; rewards,
Pareto bookkeeping, the NB201 runner and ``nasir bench``."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nasir.bench import NB201Table
from nasir.bench.runner import run_search, summarize
from nasir.cli import main
from nasir.dsl import SpaceBuilder
from nasir.errors import NasirError, SpecError
from nasir.ops import Conv2dOp
from nasir.passes import verify
from nasir.passes.hashing import assignment_hash
from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.dedup import SpaceExhausted
from nasir.strategies.metaqnn import EPSILON_SCHEDULE, scaled_schedule
from nasir.strategies.pareto import ParetoArchive, dominates, hypervolume, pareto_front
from nasir.strategies.rewards import make_reward

NEW = ["grid", "regularized_evolution", "reinforce", "ppo", "metaqnn"]
SMALL_OPTS = {"regularized_evolution": {"population": 8, "sample": 3},
              "reinforce": {}, "ppo": {"batch": 3}, "metaqnn": {"budget": 20},
              "grid": {"order": "shuffled"}, "random": {}}


@pytest.fixture(scope="module")
def table():
    return NB201Table.load()


def _drive(s, table, steps, batch=1):
    """Propose/feedback ``steps`` rounds, answering from the NB201 table."""
    for _ in range(steps):
        for a in s.propose(batch):
            s.feedback(a, {"accuracy": table.peek(a) / 100})


def _tiny_space():
    s = SpaceBuilder("tiny", (1, 4, 4))
    x = s.op(Conv2dOp(out_channels=s.value("c", (2, 4)), kernel=s.value("k", (1, 3))), s.input)
    return s.build(x)


# -- the contract: resume from history ----------------------------------------------------
@pytest.mark.parametrize("name", ["random", *NEW])
def test_rebuilt_strategy_proposes_the_same_next(name, table):
    sp = get_space("nb201")
    batch = 3 if name == "ppo" else 1
    s = make_strategy(name, sp, seed=7, **SMALL_OPTS[name])
    _drive(s, table, 18 // batch, batch)
    stored = json.loads(json.dumps(s.state()))
    again = make_strategy(name, sp, seed=stored["seed"], **SMALL_OPTS[name])
    again.replay(stored["history"])
    nxt = [a.to_json() for a in s.propose(4)]
    assert [a.to_json() for a in again.propose(4)] == nxt
    # another seed diverges (the test can fail)
    other = make_strategy(name, sp, seed=8, **SMALL_OPTS[name])
    with pytest.raises(NasirError, match="does not replay"):
        other.replay(stored["history"])


def test_metaqnn_resumes_on_its_layer_space():
    sp = get_space("metaqnn", input_shape=(1, 8, 8), num_classes=10)
    s = make_strategy("metaqnn", sp, seed=3, budget=12)
    assert s.state_kind == "layer"
    for k in range(8):
        for a in s.propose(1):
            s.feedback(a, {"accuracy": 0.5 + 0.05 * (len(a) % 7) + 0.001 * k})
    again = make_strategy("metaqnn", sp, seed=3, budget=12)
    again.replay(s.state()["history"])
    assert again.propose(3) == s.propose(3)


# -- queries: distinct architectures, no endless loops ------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_no_canonical_architecture_is_proposed_twice(name, table):
    sp = get_space("nb201")
    batch = 3 if name == "ppo" else 1
    s = make_strategy(name, sp, seed=1, **SMALL_OPTS[name])
    hashes = []
    for _ in range(40 // batch):
        for a in s.propose(batch):
            hashes.append(assignment_hash(sp, a))
            s.feedback(a, {"accuracy": table.peek(a) / 100})
    assert len(hashes) == len(set(hashes))


@pytest.mark.parametrize("name", ["grid", "regularized_evolution", "reinforce", "metaqnn"])
def test_exhausting_a_tiny_space_stops_instead_of_looping(name):
    sp = _tiny_space()
    opts = {"regularized_evolution": {"population": 2, "sample": 1}}.get(name, {})
    s = make_strategy(name, sp, seed=0, **opts)
    got = []
    with pytest.raises(SpaceExhausted):
        for _ in range(10):
            for a in s.propose(1):
                got.append(a)
                s.feedback(a, {"accuracy": 0.1 * len(got)})
    assert len({assignment_hash(sp, a) for a in got}) == len(got) == 4


def test_grid_orders_and_size_limit():
    sp = get_space("nb201")
    g = make_strategy("grid", sp, order="schema")
    first = g.propose(5)
    assert all(a["edge_0_1"] == "none" for a in first)  # schema order: last decision fastest
    shuffled = make_strategy("grid", sp, seed=1, order="shuffled").propose(5)
    assert shuffled != first
    # distinct order: one assignment per canonical architecture, each as likely to come first
    from nasir.strategies.grid import distinct_rows

    rows = distinct_rows(sp)
    assert len(rows) == 6470 and len({assignment_hash(sp, sp.from_indices(r)) for r in rows}) \
        == 6470
    d = make_strategy("grid", sp, seed=1)
    picked = d.propose(300)
    assert {tuple(sp.indices(a)) for a in picked} <= {tuple(r) for r in rows.tolist()}
    assert len({assignment_hash(sp, a) for a in picked}) == 300
    with pytest.raises(SpecError, match="too many for grid search"):
        make_strategy("grid", get_space("mnasnet"))
    with pytest.raises(SpecError, match="unknown grid order"):
        make_strategy("grid", sp, order="spiral")


# -- regularized evolution ----------------------------------------------------------------
def test_evolution_ages_out_the_oldest_and_mutates_tournament_winners(table):
    sp = get_space("nb201")
    s = make_strategy("regularized_evolution", sp, seed=0, population=5, sample=2)
    order = []
    for _ in range(12):
        a = s.propose(1)[0]
        s.feedback(a, {"accuracy": table.peek(a) / 100})
        order.append(a)
        assert len(s.population) <= 5
    assert [m[0] for m in s.population] == order[-5:]  # oldest removed, whatever its score
    children = order[5:]
    assert all("mutation" in a.provenance for a in children)
    assert all(sum(a[k] != b[k] for k in a) == 1 for a in children
               for b in [sp.check(a.provenance["parent"])])
    with pytest.raises(SpecError, match="sample <= population"):
        make_strategy("regularized_evolution", sp, population=3, sample=5)


# -- controller strategies ----------------------------------------------------------------
@pytest.mark.parametrize("name,opts", [("reinforce", {"lr": 0.05, "max_tries": 3}),
                                       ("ppo", {"lr": 0.05, "batch": 4, "epochs": 4,
                                                "max_tries": 3})])
def test_controller_learns_a_toy_reward(name, opts):
    """Reward = number of edges set to nor_conv_3x3: the policy must move towards it."""
    torch.set_num_threads(1)
    sp = get_space("nb201")
    s = make_strategy(name, sp, seed=0, **opts)
    before = float(np.mean([p[3] for p in s.probabilities()]))
    for _ in range(40 // opts.get("batch", 1)):
        for a in s.propose(opts.get("batch", 1)):
            s.feedback(a, {"accuracy": sum(v == "nor_conv_3x3" for v in a.values()) / 6})
    after = float(np.mean([p[3] for p in s.probabilities()]))
    assert before == pytest.approx(0.2, abs=0.05)
    assert after > 0.4, (before, after)
    assert s.updates >= 15


def test_controller_failed_trial_scores_worst():
    sp = get_space("nb201")
    s = make_strategy("reinforce", sp, seed=0)
    a = s.propose(1)[0]
    s.feedback(a, {"status": "failed"})
    assert s.seen.known(a) == 0.0


# -- MetaQNN ------------------------------------------------------------------------------
def test_epsilon_schedule_is_the_papers_scaled_to_the_budget():
    full = scaled_schedule(None)
    assert len(full) == 2700 and full[:1500] == [1.0] * 1500 and full[1500] == 0.9
    assert full[-1] == 0.1 and sum(c for _, c in EPSILON_SCHEDULE) == 2700
    s150 = scaled_schedule(150)
    assert len(s150) == 150 and s150.count(1.0) == 83 and sorted(set(s150))[0] == 0.1


def test_metaqnn_layer_states_follow_the_terminate_action():
    sp = get_space("metaqnn", input_shape=(1, 8, 8), num_classes=10)
    s = make_strategy("metaqnn", sp, seed=0)
    a = {"u0_filters": 64, "u0_kernel": 3, "u0_pool": "p2s2", "u1_more": 0, "fc0_more": 1,
         "fc0_units": 256, "fc1_more": 0}
    traj = s.trajectory(a)
    labels = [st_[0] for st_, _ in traj]
    assert labels == ["u0_filters", "u0_kernel", "u0_pool", "u1_more", "fc0_more",
                      "fc0_units", "fc1_more"]
    # state = (decision, value chosen before it, representation size)
    g = sp.instantiate(sp.check(a))
    verify(g)
    pooled = [n.type.shape[-1] for n in g.nodes() if n.op.name == "max_pool2d"]
    assert traj[3][0] == ("u1_more", ("u0_pool", "p2s2"), pooled[0]) and pooled[0] == 5
    assert traj[0][0][2] == 8


def test_metaqnn_q_update_and_replay():
    sp = get_space("nb201")
    s = make_strategy("metaqnn", sp, seed=0, replays=1, state="prefix")
    a = s.propose(1)[0]
    s.feedback(a, {"accuracy": 1.0})
    traj = s.trajectory(a)
    # one replay of the only memory, backwards: the last Q moves 1% towards the reward,
    # the one before it 1% towards max Q of the next state (0.505 now)
    assert s.q_value(*traj[-1]) == pytest.approx(0.5 + 0.01 * 0.5)
    assert s.q_value(*traj[-2]) == pytest.approx(0.5 + 0.01 * 0.005)
    assert s.q_value(*traj[0]) > 0.5
    r = make_strategy("metaqnn", sp, seed=0, replays=128)
    b = r.propose(1)[0]
    r.feedback(b, {"accuracy": 1.0})
    assert r.q_value(*r.trajectory(b)[-1]) > 0.7  # 129 updates of the only memory


# -- rewards ------------------------------------------------------------------------------
def test_mnasnet_rewards():
    soft = make_reward({"kind": "mnasnet", "target": 10.0, "mode": "soft"})
    hard = make_reward({"kind": "mnasnet", "target": 10.0, "mode": "hard"})
    m_fast, m_slow = {"accuracy": 0.8, "latency_ms": 5.0}, {"accuracy": 0.8, "latency_ms": 20.0}
    assert soft(m_fast) == pytest.approx(0.8 * 0.5 ** -0.07)
    assert soft(m_slow) == pytest.approx(0.8 * 2.0 ** -0.07)
    assert hard(m_fast) == pytest.approx(0.8) and hard(m_slow) == pytest.approx(0.4)
    macs = make_reward({"kind": "mnasnet", "target": 1e6, "metric": "macs", "mode": "hard"})
    assert macs({"accuracy": 0.5, "macs": 2e6}) == pytest.approx(0.25)
    assert make_reward({"kind": "accuracy", "power": 3})({"accuracy": 0.5}) == 0.125
    assert make_reward(soft.spec())(m_slow) == soft(m_slow)
    for bad in ("soft", {"kind": "mnasnet"}, {"kind": "mnasnet", "target": 1, "mode": "x"},
                {"kind": "latency"}, {"kind": "accuracy", "colour": 1}, 3):
        with pytest.raises(SpecError):
            make_reward(bad)


def test_ppo_with_mnasnet_reward_runs():
    sp = get_space("nb201")
    s = make_strategy("ppo", sp, seed=0, batch=2,
                      reward={"kind": "mnasnet", "target": 5.0, "metric": "latency_ms",
                              "mode": "soft"})
    for a in s.propose(2):
        s.feedback(a, {"accuracy": 0.9, "latency_ms": 4.0})
    assert s.updates == 4


# -- Pareto -------------------------------------------------------------------------------
pts = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=25)


@given(pts)
def test_pareto_front_matches_brute_force(points):
    front = pareto_front(points, ("max", "min"))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p, ("max", "min")) for q in points)
        first = points.index(p) == i
        assert (i in front) == (not dominated and first)


@given(pts)
def test_hypervolume_equals_counted_cells(points):
    ref = (-1, 21)
    cells = {(x, y) for px, py in points for x in range(0, px + 1) for y in range(py, 21)}
    # each dominated unit cell [x-1, x] x [y, y+1] inside the reference box
    assert hypervolume(points, ref, ("max", "min")) == pytest.approx(len(cells))


def test_pareto_archive_of_strategy_results(table):
    sp = get_space("nb201")
    s = make_strategy("random", sp, seed=0)
    for a in s.propose(30):
        s.feedback(a, {"accuracy": table.peek(a), "macs": float(sum(
            v.startswith("nor_conv") for v in a.values()))})
    arch = ParetoArchive.of(s.results, ("accuracy", "macs"))
    front = arch.points()
    assert front == sorted(front, reverse=True)  # best accuracy first, then cheaper
    assert all(not dominates(p, q, ("max", "min")) for p in front for q in front)
    assert arch.hypervolume((0.0, 7.0)) > 0
    with pytest.raises(SpecError, match="no default sense"):
        ParetoArchive(("accuracy", "colour"))


# -- runner and CLI -----------------------------------------------------------------------
def test_runner_counts_distinct_queries_and_regret(table):
    r = run_search("regularized_evolution", seed=0, queries=40,
                   options={"population": 10, "sample": 3}, table=table)
    assert len(r.curve) == 40 and np.all(np.diff(r.curve) >= 0)
    assert r.regret == pytest.approx(table.optimum - r.curve[-1])
    assert r.best and table.peek(r.best) == r.best_accuracy
    s = summarize({"x": [r, r]}, 40, table.optimum)
    assert s["results"][0]["std_regret"] == 0.0 and s["seeds"] == 2


def test_evolution_beats_random_on_a_small_budget(table):
    ev = [run_search("regularized_evolution", k, 100, table=table,
                     options={"population": 20, "sample": 5}).regret for k in range(6)]
    rs = [run_search("random", k, 100, table=table).regret for k in range(6)]
    assert np.mean(ev) < np.mean(rs)


def test_bench_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "curves.png"
    rc = main(["bench", "nb201", "--strategy", "regularized_evolution,metaqnn",
               "--queries", "15", "--seeds", "2", "--json", "--plot", str(png)])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    obj = json.loads(last)
    assert obj["queries"] == 15 and obj["seeds"] == 2
    assert obj["optimum"] == pytest.approx(94.0664)
    assert [r["strategy"] for r in obj["results"]] == ["random", "regularized_evolution",
                                                       "metaqnn"]
    for r in obj["results"]:
        assert r["mean_regret"] == pytest.approx(obj["optimum"] - r["mean_best_accuracy"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,msg", [
    (["--strategy", "annealing"], "unknown strategy"),
    (["--queries", "0"], "must be >= 1"),
    (["--plot", "x.pdf"], "PNG"),
    (["--set", "ppo.lr=0.1"], "not being run"),
    (["--set", "lr=0.1"], "NAME.KEY=VALUE"),
])
def test_bench_cli_errors(argv, msg, capsys):
    assert main(["bench", "nb201", *argv]) == 2
    assert msg in capsys.readouterr().err


# -- short real searches on digits with the training estimator ----------------------------
def _digits_search(name, space, trials, **opts):
    from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator

    est = TrainingEstimator(TrainConfig(epochs=3, data_fraction=0.6, batch_size=32, seed=0,
                                        width_multiplier=0.25))
    s = make_strategy(name, space, seed=0, **opts)
    accs = []
    for _ in range(trials):
        a = s.propose(1)[0]
        r = est.estimate(space.instantiate(a))
        accs.append(r.val_accuracy if r.ok else None)
        s.feedback(a, {"accuracy": r.val_accuracy, "status": "ok" if r.ok else "failed",
                       "macs": r.macs})
    return s, accs


@pytest.mark.slow
def test_metaqnn_real_search_on_digits():
    sp = get_space("metaqnn", input_shape=(1, 8, 8), num_classes=10, units=2, fc_layers=1)
    s, accs = _digits_search("metaqnn", sp, 5, budget=5, replays=16)
    trained = [a for a in accs if a is not None]
    assert trained and max(trained) > 0.2  # real training learned
    assert len(s.memory) >= 5 and any(abs(q - 0.5) > 1e-6 for row in s.q.values() for q in row)
    assert ParetoArchive.of(s.results, ("accuracy", "macs")).front()


@pytest.mark.slow
def test_reinforce_real_search_on_digits():
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    s, accs = _digits_search("reinforce", sp, 5, lr=0.05)
    trained = [a for a in accs if a is not None]
    assert trained and max(trained) > 0.2
    assert s.updates == 5 and s.baseline is not None
