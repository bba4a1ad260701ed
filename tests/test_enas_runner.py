"""ENAS through the runner: the controller proposes, the ``shared`` estimator scores with the
weights of the shared-weight job, feedback trains the controller; stop and resume."""

from __future__ import annotations

import numpy as np
import pytest

from nasir.errors import NasirError, TrialError
from nasir.runtime.driver import run_search
from nasir.runtime.experiment import Experiment
from nasir.runtime.preflight import prepare
from nasir.runtime.resume import resume_run
from nasir.runtime.shared_weights import SharedWeightsEstimator
from nasir.runtime.store import RunStore
from nasir.spaces import get_space
from nasir.strategies import make_strategy
from nasir.strategies.base import AwaitFeedback
from nasir.strategies.dedup import SpaceExhausted

SPACE = {"name": "nb201", "options": {"channels": 4, "cells_per_stage": 1}}
TINY = {"epochs": 2, "controller_steps": 2, "controller_samples": 2, "derive_samples": 2,
        "data_fraction": 0.15, "batch_size": 32}
PLAN = 2 * 2 * 2 + 2 + 1


def _exp(**over) -> Experiment:
    d = {"space": SPACE, "strategy": {"name": "enas", "options": TINY},
         "estimator": {"options": {"final": "shared"}}, "executor": {"kind": "inprocess"},
         "budget": {"trials": PLAN, "wall_time_s": None}, "seed": 3, "device": "cpu"}
    d.update(over)
    return Experiment.from_dict(d)


def _outcome(folder: str) -> tuple[list[tuple], list[tuple]]:
    st = RunStore.open(folder)
    try:
        trials = [(t["hash"], t["status"], t["metrics"].get("role"),
                   t["metrics"].get("shared_epochs"), t["reward"]) for t in st.trials()]
        steps = [(r["step"], round(r["record"]["loss"], 6))
                 for r in st.job_steps("enas-shared")]
        return trials, steps
    finally:
        st.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, tuple]:
    folder = str(tmp_path_factory.mktemp("enas") / "run")
    summary = run_search(_exp(), folder)
    assert summary["status"] == "finished"
    return folder, _outcome(folder)


def test_the_run_is_the_papers_loop(reference):
    folder, (trials, steps) = reference
    assert len(trials) == PLAN and all(t[1] == "done" for t in trials)
    roles = [t[2] for t in trials]
    assert roles == ["child"] * 8 + ["derive"] * 2 + ["derived"]
    # each child is scored with the weights of the epochs trained before it was proposed
    assert [t[3] for t in trials[:8]] == [1] * 4 + [2] * 4
    assert all(t[3] == 2 for t in trials[8:])
    assert [s[0] for s in steps] == [0, 1]  # one job row per epoch of shared weights
    # the derived child is the best-scored derivation candidate
    best = max(trials[8:10], key=lambda t: t[4])
    assert trials[10][0] == best[0]
    st = RunStore.open(folder)
    try:
        events = st.events()
        assert [e["event"] for e in events].count("job") == 2
        # the derived child repeats a derivation child's hash, yet nothing came from the
        # driver's cache: a trial with shared-weight inputs is always scored itself
        assert all(t["cached_from"] is None for t in st.trials())
    finally:
        st.close()


def test_stop_and_resume_ends_like_the_uninterrupted_run(tmp_path, reference):
    folder = str(tmp_path / "run")
    seen = []

    def stop(kind, info):
        if kind == "trial":
            seen.append(info["done"])
            if info["done"] == 5:  # mid epoch 1: after its job, before its controller steps
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(_exp(), folder, callback=stop)
    summary = resume_run(folder)
    assert summary["status"] == "finished"
    assert _outcome(folder) == reference[1]


def test_an_enas_run_needs_the_shared_estimator_and_a_budget_for_its_plan():
    assert _exp().estimator.kind == "shared"  # selected when the estimator is left alone
    # the training estimator's options train the derived child
    est = _exp(estimator={"kind": "training", "options": {"epochs": 2}}).estimator
    assert (est.kind, est.options) == ("shared", {"final_options": {"epochs": 2}})
    with pytest.raises(NasirError, match="not with the nb201 estimator"):
        prepare(_exp(estimator={"kind": "nb201"}), smoke=False)
    with pytest.raises(NasirError, match="trains no shared weights"):
        prepare(_exp(strategy={"name": "random"}, estimator={"kind": "shared"}), smoke=False)
    with pytest.raises(NasirError, match=f"has {PLAN} trials but the budget is 4"):
        prepare(_exp(budget={"trials": 4}), smoke=False)


def test_the_estimator_refuses_weights_of_another_version(reference):
    folder, _ = reference
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    est = SharedWeightsEstimator(run_dir=folder)
    ins = {"job": "enas-shared", "role": "child", "batches": 1, "seed": 3, "fixed": {},
           "batch_size": 32, "data_fraction": 0.15}
    est.set_task({"inputs": {"shared": {**ins, "steps": 2}}})
    m = est.evaluate(sp, sp.reference("resnet"), seed=11)
    assert 0 <= m["accuracy"] <= 1 and m["shared_epochs"] == 2
    assert est.evaluate(sp, sp.reference("resnet"), seed=11)["accuracy"] == m["accuracy"]
    est.set_task({"inputs": {"shared": {**ins, "steps": 1}}})
    with pytest.raises(TrialError, match="after 1 epochs\\) are gone"):
        est.evaluate(sp, sp.reference("resnet"), seed=11)
    est.set_task({})
    with pytest.raises(TrialError, match="ENAS's children only"):
        est.evaluate(sp, sp.reference("resnet"), seed=11)


def _best_op_share(s, a) -> float:
    return float(np.mean([v == "nor_conv_3x3" for v in a.values()]))


def test_the_controller_learns_from_feedback():
    """Without shared weights in the way: a reward that counts one op. The controller's
    probability of that op, and its children's reward, must rise (it can fail: with the
    sign of the advantage flipped, or no update, neither does)."""
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    s = make_strategy("enas", sp, seed=0, epochs=1, controller_steps=30,
                      controller_samples=5, derive_samples=1, c_lr=0.05, entropy=0.0)
    op = list(sp.decisions[0].options).index("nor_conv_3x3")
    before = np.mean([p[op] for p in s.probabilities().values()])
    s.job_done("enas-shared", {"epoch": 0, "loss": 0.0, "w_lr": 0.0})  # weights: not used
    rewards = []
    for _ in range(30):
        batch = s.propose(5)
        with pytest.raises(AwaitFeedback):
            s.propose(1)  # the next step waits for this step's feedback
        for a in batch:
            r = _best_op_share(s, a)
            rewards.append(r)
            s.feedback(a, {"accuracy": r})
    after = np.mean([p[op] for p in s.probabilities().values()])
    # the micro settings cap op logits at ±1.1/2.5: p(op) can reach about 0.375, not 1
    assert after > before + 0.1, (before, after)
    assert np.mean(rewards[-50:]) > np.mean(rewards[:50]) + 0.05, rewards
    (d,) = s.propose(1)
    s.feedback(d, {"accuracy": 0.5})
    assert s.derived() is None and s.propose(1)[0] == d  # the derived child: the best
    with pytest.raises(SpaceExhausted):
        s.propose(1)



def test_the_derived_child_is_trained_by_the_training_estimator(reference):
    from nasir.runtime.estimators import build_estimator

    folder, _ = reference
    exp = _exp(estimator={"options": {"final_options": {"epochs": 1, "data_fraction": 0.1}}})
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    est = build_estimator(exp.to_dict(), folder)
    est.set_task({"inputs": {"shared": {"job": "enas-shared", "steps": 2, "role": "derived",
                                        "batches": 1, "seed": 3, "fixed": {},
                                        "batch_size": 32, "data_fraction": 0.15}}})
    m = est.evaluate(sp, sp.reference("resnet"), seed=5)
    assert m["role"] == "derived" and m["epochs_run"] == 1 and "shared_epochs" not in m
    assert 0 <= m["accuracy"] <= 1 and m["params"] > 0  # static analysis runs too
