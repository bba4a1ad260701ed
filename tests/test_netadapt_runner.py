"""NetAdapt through the runner (issue 22): each iteration's per-layer proposals are trials of
the start network's width space, fine-tuned from the pruned weights of the current network
by the run's training estimator; feedback picks the winner; a final trial fine-tunes it
long-term; a stopped run resumes to the same end."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from nasir.backends.torch.lowering import lower, prepare
from nasir.backends.torch.width_space import SPEC, build, layer_groups
from nasir.errors import NasirError
from nasir.runtime.driver import Driver, run_search, start_run
from nasir.runtime.executors import InProcessExecutor
from nasir.runtime.experiment import Experiment
from nasir.runtime.inherit import start_state
from nasir.runtime.store import RunStore
from nasir.spaces import get_space
from nasir.strategies.base import AwaitFeedback, make_strategy

OPTS = {"latency": "macs", "budget_ratio": 0.5, "reduction_ratio": 0.04,
        "pretrain_epochs": 3, "short_term_epochs": 1, "long_term_epochs": 1,
        "max_iters": 2, "start": "small", "filter_step": 8,
        "layers": ["12", "20", "28", "36"]}


def _exp(**over):
    d = {"space": {"name": "tiny_mnasnet"}, "strategy": {"name": "netadapt", "options": OPTS},
         "estimator": {"kind": "training", "latency": "off",
                       "options": {"epochs": 1, "data_fraction": 0.7}},
         "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
         "budget": {"trials": 60, "wall_time_s": None}, "seed": 1, "device": "cpu"}
    d.update(over)
    return Experiment.from_dict(d)


def _space():
    return build(base="tiny_mnasnet", start="small", input_shape=(1, 8, 8), num_classes=10)


def test_width_space_members_are_the_start_network_with_fewer_filters():
    sp, base = _space(), get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    a = sp.reference("start")
    g, ref = prepare(sp.instantiate(a)), prepare(base.instantiate(base.reference("small")))
    assert [n.op.signature() for n in g.nodes()] == [n.op.signature() for n in ref.nodes()]
    groups = layer_groups(sp, g)
    assert set(groups) == {d.label for d in sp.decisions}
    for d in sp.decisions:  # options: multiples of 8 below the width, and the width
        assert d.options[-1] == groups[d.label].width == a[d.label]
        assert all(o % 8 == 0 for o in d.options[:-1])
    with pytest.raises(NasirError, match="no prunable layer"):
        build(base="tiny_mnasnet", start="small", layers=["nope"], input_shape=(1, 8, 8))


def test_a_proposal_starts_from_the_parents_largest_norm_filters():
    sp = _space()
    parent = sp.reference("start")
    child = parent.replace(w_20=8)
    run = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"na-inherit-{os.getpid()}")
    os.makedirs(os.path.join(run, "weights"), exist_ok=True)
    state = lower(sp.instantiate(parent), seed=3).state_dict()
    torch.save(state, os.path.join(run, "weights", "p.pt"))
    got = start_state(sp, child, {"inherit": {"weights": "weights/p.pt",
                                              "parent": parent.to_json()}}, run)
    assert got is not None
    c = layer_groups(sp, sp.instantiate(parent))["w_20"]
    w = state[f"{c.sources[0]}.weight"]
    keep = sorted(torch.argsort(w.flatten(1).norm(dim=1), descending=True)[:8].tolist())
    assert torch.equal(got[f"{c.sources[0]}.weight"], w[keep])
    assert torch.equal(got[f"{c.consumers[0]}.weight"], state[f"{c.consumers[0]}.weight"][:, keep])
    module = lower(sp.instantiate(child), seed=0)
    module.load_state_dict(got)  # every tensor fits the narrower network
    with pytest.raises(NasirError, match="more than"):
        start_state(sp, parent, {"inherit": {"weights": "weights/p.pt",
                                             "parent": child.to_json()}}, run)


def test_strategy_waits_for_the_iterations_feedback_and_refuses_other_spaces():
    s = make_strategy("netadapt", _space(), seed=0, latency="macs", budget_ratio=0.9)
    a = s.propose(1)[0]
    with pytest.raises(AwaitFeedback):
        s.propose(1)
    s.feedback(a, {"status": "ok", "accuracy": 0.4})
    assert s.queue and all(t["inputs"]["stage"] == "short_term" for t in s.queue)
    with pytest.raises(NasirError, match="width space"):
        make_strategy("netadapt", get_space("tiny_mnasnet"), latency="macs")


def test_netadapt_runs_through_the_runner_one_trial_per_proposal(tmp_path):
    s1 = run_search(_exp(), str(tmp_path / "a"))
    store = RunStore.open(str(tmp_path / "a"))
    cfg, trials, events = store.config, store.trials(), store.events()
    assert s1["status"] == "finished" and store.meta("exhausted").startswith("NetAdapt")
    assert store.meta("exhausted").endswith(f"trial {len(trials)} (long-term fine-tuned)")
    store.close()
    assert cfg["space"]["name"] == SPEC and cfg["space"]["options"]["base"] == "tiny_mnasnet"
    stages = [t["metrics"].get("stage") for t in trials]
    # the start, 2 iterations of one proposal per layer that can shrink, the final network
    assert stages[0] == "pretrain" and stages[-1] == "long_term"
    assert set(stages[1:-1]) == {"short_term"} and 6 <= len(stages[1:-1]) <= 8
    assert all(t["status"] == "done" and 0 <= t["metrics"]["accuracy"] <= 1 for t in trials)
    assert len({t["metrics"]["accuracy"] for t in trials}) > 3  # they really train
    assert os.path.exists(tmp_path / "a" / "weights" / f"{trials[-1]['hash']}.pt")
    # the strategy rebuilt from the stored events: each iteration's network is faster, and
    # the final trial fine-tunes the last one
    s = make_strategy("netadapt", _space_of(cfg), seed=1, objective="reward",
                      **{k: v for k, v in cfg["strategy"]["options"].items()})
    s.replay(events)
    lat = [s.lat0] + [it["latency_table_ms"] for it in s.iterations]
    assert len(s.iterations) == 2 and s.stop == "max_iters"
    assert all(b < a for a, b in itertools.pairwise(lat))
    assert trials[-1]["assignment"] == s.iterations[-1]["assignment"]
    # interrupted with a trial in flight, resumed with two slots finishing out of order
    # (the driver meets AwaitFeedback at each iteration's end): the same trials and results
    st, drv = start_run(_exp(), str(tmp_path / "b"))
    drv.executor = _OutOfOrder(drv.exp_dict, st.folder, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        drv.run()
    assert {t["status"] for t in st.trials()} == {"done", "running"}
    st.close()
    st = RunStore.open(str(tmp_path / "b"))
    drv = Driver(st, Experiment.from_dict(st.config))
    drv.executor = _OutOfOrder(drv.exp_dict, st.folder)
    drv.run()
    again = st.trials()
    st.close()
    assert [t["assignment"] for t in again] == [t["assignment"] for t in trials]
    assert [t["metrics"]["accuracy"] for t in again] == pytest.approx(
        [t["metrics"]["accuracy"] for t in trials])


class _OutOfOrder(InProcessExecutor):
    """Two slots; the trial submitted last finishes first; ``interrupt_at``: the poll that
    stops the driver as Ctrl-C would, with trials in flight."""

    def __init__(self, exp, run_dir, interrupt_at=None):
        super().__init__(exp, run_dir)
        self.slots, self.polls, self.interrupt_at = 2, 0, interrupt_at

    def poll(self, timeout):
        self.polls += 1
        if self.polls == self.interrupt_at:
            raise KeyboardInterrupt
        if len(self._queue) > 1:
            self._queue.rotate(1)
        return super().poll(timeout)


def _space_of(cfg):
    o = cfg["space"]["options"]
    return build(**o)


def test_netadapt_blocks_proposals_are_trials_of_the_users_space(tmp_path):
    from nasir.passes import analyze

    sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    opts = {"latency": "macs", "decisions": ["b3_filters", "b4_filters"], "max_iters": 2,
            "pretrain_epochs": 2, "finetune_epochs": 1, "step_ms": 1e-9}
    s = make_strategy("netadapt_blocks", sp, budget_ms=1.0, **opts)
    start = s.start_assignment()
    budget = 0.8 * analyze(prepare(sp.instantiate(start)))["macs"] * 1e-6
    exp = _exp(strategy={"name": "netadapt_blocks", "options": {**opts, "budget_ms": budget}})
    run_search(exp, str(tmp_path))
    st = RunStore.open(str(tmp_path))
    cfg, trials, note = st.config, st.trials(), st.meta("exhausted")
    st.close()
    assert cfg["space"]["name"] == "tiny_mnasnet" and note.startswith("NetAdapt (per-block")
    stages = [t["metrics"].get("stage") for t in trials]
    assert stages[0] == "pretrain" and set(stages[1:]) == {"short_term"} and len(stages) == 5
    assert trials[0]["assignment"] == start.to_json()
    for t in trials[1:3]:  # the first iteration: one block narrower than the start each
        changed = [k for k, v in t["assignment"].items() if v != start[k]]
        assert len(changed) == 1 and t["assignment"][changed[0]] < start[changed[0]]


@pytest.mark.parametrize("strategy", ["netadapt", "netadapt_blocks"])
def test_netadapt_with_an_estimator_that_ignores_inherited_weights_is_refused_at_start(
        tmp_path, strategy):
    """Only the training estimator starts a trial from its inherited weights; a NetAdapt run
    scored by the table or by a user's evaluator would rank untrained networks. It is a
    NasirError before any trial runs, and the failed start leaves no run folder."""
    run = tmp_path / "run"
    exp = _exp(estimator={"kind": "nb201"}, strategy={"name": strategy, "options": {}})
    with pytest.raises(NasirError) as e:
        run_search(exp, str(run))
    assert "training estimator" in e.value.message and e.value.where == "estimator.kind"
    assert not run.exists()
