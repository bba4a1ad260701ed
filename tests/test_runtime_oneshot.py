"""The one-shot (weight-sharing) estimator: trained once, shared, order-independent, real."""

from __future__ import annotations

import json
import os

import pytest

from nasir.cli import main
from nasir.errors import NasirError, TrialError
from nasir.runtime.store import RunStore
from nasir.runtime.weight_sharing import OneShotEstimator
from nasir.spaces import get_space

OPTS = {"epochs": 8, "bn_batches": 2}


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", input_shape=(1, 8, 8), channels=8, cells_per_stage=1)


@pytest.fixture(scope="module")
def shared(space, tmp_path_factory):
    """One estimator that trained the supernet into a run folder."""
    run = tmp_path_factory.mktemp("oneshot_run")
    est = OneShotEstimator(OPTS, run_dir=str(run))
    first = est.evaluate(space, space.reference("resnet"), seed=0)
    return est, run, first


def test_trained_supernet_beats_chance_and_its_untrained_self(space, shared):
    _, _, first = shared
    # digits has 10 balanced classes: an untrained (or broken) supernet scores ~0.1
    assert first["accuracy"] > 0.5, first
    assert first["supernet_epochs"] == 8 and len(first["supernet_loss"]) == 8
    assert first["supernet_loss"][-1] < first["supernet_loss"][0]
    cold = OneShotEstimator({**OPTS, "epochs": 1, "lr": 1e-6})
    assert cold.evaluate(space, space.reference("resnet"), seed=0)["accuracy"] < \
        first["accuracy"] - 0.2


def test_scores_do_not_depend_on_order_and_are_shared_through_the_run_folder(space, shared):
    est, run, first = shared
    a, b = space.reference("resnet"), space.reference("best_cifar10")
    acc_b = est.evaluate(space, b, seed=1)["accuracy"]
    assert est.evaluate(space, a, seed=2)["accuracy"] == first["accuracy"]
    # a second process (here: a second estimator) loads the stored weights, trains nothing
    mtime = os.path.getmtime(run / "supernet.pt")
    other = OneShotEstimator(OPTS, run_dir=str(run))
    assert other.evaluate(space, b, seed=0)["accuracy"] == acc_b
    assert other.evaluate(space, a, seed=0)["accuracy"] == first["accuracy"]
    assert os.path.getmtime(run / "supernet.pt") == mtime
    meta = json.loads((run / "supernet.json").read_text())
    assert meta["config"]["epochs"] == 8 and meta["supernet_epochs"] == 8
    # different training settings never reuse those weights
    changed = OneShotEstimator({**OPTS, "epochs": 1}, run_dir=str(run))
    assert changed.evaluate(space, a, seed=0)["supernet_epochs"] == 1


def test_type_changing_space_is_a_clear_error():
    sp = get_space("tiny_mnasnet")
    est = OneShotEstimator({"epochs": 1})
    with pytest.raises(NasirError) as e:
        est.evaluate(sp, sp.reference(next(iter(sp.references))), seed=0)
    msg = str(e.value)
    assert "weight-sharing supernet" in msg and "fixed" in msg and "--estimator training" in msg


def test_bad_options_and_pinned_contradictions(space):
    with pytest.raises(NasirError, match=r"unknown oneshot estimator option.*epochz"):
        OneShotEstimator({"epochz": 3})
    with pytest.raises(NasirError, match="epochs must be >= 1"):
        OneShotEstimator({"epochs": 0})
    label = space.decisions[0].label
    a = dict(space.reference("resnet"))
    other = next(v for v in space.decision(label).options if v != a[label])
    est = OneShotEstimator({**OPTS, "fixed": {label: other}})
    with pytest.raises(TrialError, match="pinned value"):
        est.evaluate(space, a, seed=0)


def test_search_with_the_oneshot_estimator(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["search", "--space", "nb201", "--space-opt", "input_shape=[1,8,8]",
                 "--space-opt", "channels=8", "--space-opt", "cells_per_stage=1",
                 "--strategy", "random", "--estimator", "oneshot",
                 "--estimator-opt", "epochs=2", "--estimator-opt", "data_fraction=0.5",
                 "--reward", "accuracy", "--latency", "off", "--trials", "6",
                 "--executor", "inprocess", "--run-dir", str(run), "--no-progress",
                 "--no-report"])
    assert code == 0, capsys.readouterr().err
    trials = RunStore.open(str(run)).trials()
    assert len(trials) == 6 and all(t["status"] == "done" for t in trials), trials
    accs = [t["metrics"]["accuracy"] for t in trials]
    assert all(0.0 <= x <= 1.0 for x in accs) and len(set(accs)) > 1
    assert (run / "supernet.pt").exists()
