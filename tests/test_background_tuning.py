"""Background tuning of a run's untuned workloads (issue 23): real TVM, tiny graphs, 1–2 trials.

The measurement process compiles a network from the target's tuning database
(``measure_network``), offers the workloads it lacked to a ``BackgroundTuner``, which tunes
them while the process is idle; a later compile hits them, a new run (new database
instance, new tuner) tunes nothing, ``tune_trials = 0`` never tunes, and a workload another
process holds is skipped. One real ``nasir search`` (``tune_trials = 0``) shows the trials
and the report saying it, and tunes nothing. ~30 s CPU (a 1-trial tuning, one small run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3

import pytest

from nasir.backends.tvm import MeasureConfig, resolve_target
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.runtime.background_tuning import BackgroundTuner
from nasir.runtime.latency_service import measure_network
from nasir.text import parse_graph

CONV = """graph @g {{
  %x = input() {{shape=[4, 8, 8]}}
  %1 = conv2d(%x) {{out_channels={c}, kernel={k}}}
  %2 = relu(%1)
  return %2
}}"""
TARGET = resolve_target("host")
CFG = MeasureConfig(repeats=3, warmup=1, min_repeat_ms=1.0)


def _measure(g, db, tuner=None):
    r = measure_network(g, TARGET, CFG, None, build={"db": db}, tuner=tuner)
    assert r["ok"], r
    return r


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One database; a conv compiled from it (missing), tuned in the background, compiled
    again."""
    root = str(tmp_path_factory.mktemp("tuning"))
    db = TuningDatabase("host", root)
    windows = []

    @contextlib.contextmanager
    def window():
        windows.append(1)
        yield

    tuner = BackgroundTuner(db, 1, window=window)
    g = parse_graph(CONV.format(c=8, k=3))
    r1 = _measure(g, db, tuner)
    pending = tuner.pending
    steps = tuner.drain(budget_s=120)
    r2 = _measure(g, db, tuner)
    return root, g, tuner, r1, pending, steps, r2, len(windows)


def test_first_compile_queues_and_the_tuner_tunes_it(first):
    root, _, tuner, r1, pending, steps, _, windows = first
    assert r1["latency_untuned_workloads"] == 1 and r1["latency_tuned_workloads"] == 0
    assert pending == 1 and steps == 1  # its task came from the compile: one tuning step
    s = tuner.summary()
    assert s["tuning_queued"] == s["tuning_tuned"] == 1 and s["tuning_trials"] >= 1
    assert s["tuning_s"] > 0 and s["tuning_pending"] == 0 and s["tuning_failed"] == 0
    assert s["tuning_extract_s"] == 0
    assert windows >= 1  # candidates were timed inside the given (quiet) window
    (key,) = TuningDatabase("host", root).keys()
    assert TuningDatabase("host", root).read(key)["trials"] == 1


def test_a_later_compile_hits_and_queues_nothing(first):
    *_, tuner, _, _, _, r2, _ = first
    assert r2["latency_tuned_workloads"] == 1 and r2["latency_untuned_workloads"] == 0
    assert tuner.pending == 0 and tuner.summary()["tuning_queued"] == 1


def test_a_second_run_reuses_the_records_without_tuning(first):
    root, g, *_ = first
    db = TuningDatabase("host", root)  # a new run: new instance, new tuner
    tuner = BackgroundTuner(db, 2)
    r = _measure(g, db, tuner)
    assert r["latency_untuned_workloads"] == 0
    assert tuner.pending == 0 and tuner.drain() == 0 and tuner.summary()["tuning_tuned"] == 0


def test_tune_trials_zero_tunes_nothing(first):
    root, *_ = first
    db = TuningDatabase("host", root)
    tuner = BackgroundTuner(db, 0)
    r = _measure(parse_graph(CONV.format(c=4, k=1)), db, tuner)
    assert r["latency_untuned_workloads"] == 1
    assert tuner.pending == 0 and tuner.drain() == 0 and len(db) == 1


def test_a_workload_another_process_is_tuning_is_skipped(first):
    root, *_ = first
    db = TuningDatabase("host", root)
    tuner = BackgroundTuner(db, 1)
    from nasir.backends.tvm import tuning

    g = parse_graph(CONV.format(c=4, k=3))
    r = measure_network(g, TARGET, CFG, None, build={"db": db})
    stats = tuning.tune_graph(g, db, 0)
    tuning._MISSING.clear()  # as if compiled in another process: the tuner extracts again
    tuner.offer(g, stats)
    assert r["latency_untuned_workloads"] == 1 and tuner.pending == 1
    other = TuningDatabase("host", root)  # another open file: its flock excludes ours
    assert tuner.step() and tuner.summary()["tuning_extract_s"] > 0  # extract its tasks
    (key,) = stats.keys
    with other.claim([key]):
        assert tuner.step()
    s = tuner.summary()
    assert s["tuning_busy"] == 1 and s["tuning_tuned"] == 0 and not db.has(key)


SPACE = '''
from nasir.dsl import SpaceBuilder
from nasir.ops import ConvBNActOp, FlattenOp, GlobalAvgPoolOp, LinearOp


def build(input_shape=(3, 8, 8), num_classes=4):
    s = SpaceBuilder("bt", input_shape)
    x = s.op(ConvBNActOp(out_channels=s.value("width", [4, 8]), kernel=3), s.input)
    x = s.op(LinearOp(out_features=num_classes), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x)
'''

EVALUATOR = '''
from nasir.passes.analysis import analyze


def evaluate(trial):
    return {"accuracy": min(1.0, analyze(trial.graph)["params"] / 300.0)}
'''


def test_a_tuned_run_reports_its_workloads_and_tunes_nothing_at_zero_trials(tmp_path, monkeypatch):
    from nasir.cli import main
    from nasir.runtime.store import RunStore

    monkeypatch.setenv("NASIR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "space.py").write_text(SPACE)
    (tmp_path / "ev.py").write_text(EVALUATOR)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'[latency]\npolicy = "auto"\ntable = "{tmp_path / "lut.sqlite"}"\n'
                   "tuned = true\ntune_trials = 0\ntop_k = 2\n")
    run = str(tmp_path / "run")
    assert main(["search", "--space", str(tmp_path / "space.py") + ":build",
                 "--evaluator", str(tmp_path / "ev.py") + ":evaluate",
                 "--objective", "accuracy:max", "--objective", "latency_ms:min",
                 "--latency-policy", "auto", "--executor", "inprocess", "--seed", "1",
                 "--trials", "2", "--run-dir", run, "--no-progress", "-c", str(cfg)]) == 0
    st = RunStore.open(run)
    try:
        trials, summary = st.trials(), st.meta("latency.summary")
    finally:
        st.close()
    measured = [t["metrics"] for t in trials if t["metrics"].get("latency_source") == "measured"]
    assert measured and all(m["latency_tuned"] and "latency_untuned_workloads" in m
                            for m in measured)
    # tune_trials = 0: the run compiled from the database and tuned nothing into it
    assert summary["tuning_queued"] == summary["tuning_tuned"] == 0 and "tuning_s" in summary
    assert all(m["latency_untuned_workloads"] >= 1 for m in measured)
    assert len(TuningDatabase("host")) == 0
    # the run's table is per kernel of the database (none tuned: TVM's default schedules)
    con = sqlite3.connect(tmp_path / "lut.sqlite")
    keys = [r[0] for r in con.execute("SELECT key FROM lut_layer")]
    con.close()
    assert keys and all(re.fullmatch(r"\d+@default", k) for k in keys)
    assert all(isinstance(m.get("latency_table_ms"), float) for m in measured)
    with open(os.path.join(run, "report", "report.md")) as fh:
        assert "Tuning database:" in fh.read()


def test_table_layers_offer_their_workloads(tmp_path):
    """A per-layer table's layer compiles (the ``auto`` policy's table) offer the workloads
    the database lacks to the measurement process's tuner, as whole networks do."""
    from nasir.runtime.latency_table import PolicyLUT

    db = TuningDatabase("host", str(tmp_path / "db"))
    tuner = BackgroundTuner(db, 1)
    lut = PolicyLUT(str(tmp_path / "t.sqlite"), TARGET, config=CFG)
    lut.build = {"db": db}
    lut.tuner = tuner
    g = parse_graph(CONV.format(c=4, k=1))
    assert lut.ensure(g)  # the conv layer was measured (compiled from the database)
    assert tuner.pending >= 1 and tuner.summary()["tuning_queued"] >= 1
    lut.close()


def _wanted_lines(db):
    with open(db.wanted_path) as fh:
        return [json.loads(line) for line in fh]


def test_pending_work_outlives_the_run_and_the_next_tuner_tunes_it(tmp_path):
    """Work queued when a run ends goes to the database's wanted list; a tuner created on
    the database later (the next run) takes it, re-extracts the tasks from the network's
    JSON, tunes them, and the list is empty after."""
    from nasir.backends.tvm import tuning

    db = TuningDatabase("host", str(tmp_path / "db"))
    tuner = BackgroundTuner(db, 1)
    g = parse_graph(CONV.format(c=4, k=1))
    assert _measure(g, db, tuner)["latency_untuned_workloads"] == 1 and tuner.pending == 1
    assert tuner.persist() == 1 and tuner.pending == 0  # the run ends before tuning it
    assert tuner.summary()["tuning_wanted_saved"] == 1
    (line,) = _wanted_lines(db)
    assert line["keys"] and line["graph"]["nodes"] and line["batch"] == 1
    tuning._MISSING.clear()  # a new process: only the list's JSON is left

    nxt = BackgroundTuner(TuningDatabase("host", str(tmp_path / "db")), 1)
    assert nxt.summary()["tuning_wanted_loaded"] == 1 and nxt.pending == 1
    assert not os.path.exists(db.wanted_path)  # taken: another tuner does not take it too
    assert nxt.drain(budget_s=120) == 2  # extract from the JSON graph, then tune
    s = nxt.summary()
    assert s["tuning_tuned"] == 1 and s["tuning_failed"] == 0 and db.has(line["keys"][0])
    assert nxt.persist() == 0 and not os.path.exists(db.wanted_path)
    assert BackgroundTuner(db, 1).summary()["tuning_wanted_loaded"] == 0


def test_wanted_workloads_the_database_has_are_dropped(first):
    from nasir.serialize import graph_to_json

    root, g, *_ = first
    db = TuningDatabase("host", root)
    (key,) = db.keys()
    db.add_wanted([{"graph": graph_to_json(g), "keys": [key], "batch": 1}])
    tuner = BackgroundTuner(db, 1)
    assert tuner.pending == 0 and tuner.summary()["tuning_wanted_loaded"] == 0
    assert not os.path.exists(db.wanted_path)


def test_a_measure_worker_appends_its_missing_workloads_without_tuning(tmp_path, monkeypatch):
    """``latency.policy = "measure"``: the worker's LatencyEstimator writes what its compile
    lacked to the wanted list and tunes nothing; a tuning run's tuner loads it later."""
    from nasir.runtime.background_tuning import WantedOffers
    from nasir.runtime.estimators import LatencyEstimator

    monkeypatch.setenv("NASIR_CACHE_DIR", str(tmp_path / "cache"))
    est = LatencyEstimator("host", tuned=True)
    assert isinstance(est.wanted, WantedOffers)
    db = est.build["db"]
    g = parse_graph(CONV.format(c=4, k=1))
    assert _measure(g, db, est.wanted)["latency_untuned_workloads"] == 1
    assert _measure(g, db, est.wanted)["latency_untuned_workloads"] == 1
    (line,) = _wanted_lines(db)  # once per process, however often it is compiled
    assert len(line["keys"]) == 1 and len(db) == 0  # nothing tuned in the worker
    assert BackgroundTuner(db, 0).pending == 0 and os.path.exists(db.wanted_path)
    tuner = BackgroundTuner(db, 1)  # the next tuning run takes it
    assert tuner.summary()["tuning_wanted_loaded"] == 1 and tuner.pending == 1


def test_a_corrupt_wanted_list_is_a_warning_naming_it(tmp_path):
    from nasir.errors import StoreError

    db = TuningDatabase("host", str(tmp_path / "db"))
    db.add_wanted([{"graph": {}, "keys": ["12"], "batch": 1}])
    with open(db.wanted_path, "a") as fh:
        fh.write('{"format": 1, "graph": {}, "keys": [12]\n')
    with pytest.raises(StoreError, match=r"corrupt wanted list \(line 2\)") as e:
        db.take_wanted()
    assert db.wanted_path in str(e.value) and os.path.exists(db.wanted_path + ".bad")
    assert db.take_wanted() == []  # moved aside: later runs are not stopped by it
    with open(db.wanted_path, "w") as fh:
        fh.write("not json\n")
    with pytest.warns(UserWarning, match="wanted.jsonl"):
        tuner = BackgroundTuner(db, 1)
    assert tuner.pending == 0 and tuner.errors
    db.add_wanted([{"graph": {"nodes": "?"}, "keys": ["12"], "batch": 1}])
    with pytest.warns(UserWarning, match="wanted list entry 1"):
        tuner = BackgroundTuner(db, 1)  # a network that no longer reads: its keys fail
    assert tuner.pending == 0 and tuner.summary()["tuning_failed"] == 1


def test_the_measurement_process_reports_what_it_saved_when_the_run_ends(tmp_path, monkeypatch):
    """The run's measurement process saves its queue to the wanted list when the run ends
    and only then sends its last counts: ``tuning_wanted_saved`` in the run's summary is
    what the list holds (it used to read 0, the counts being sent before the save)."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.latency_client import ServiceClient

    monkeypatch.setenv("NASIR_CACHE_DIR", str(tmp_path / "cache"))
    db = TuningDatabase("host")  # the one the process opens ($NASIR_CACHE_DIR/tuning)
    seed = BackgroundTuner(db, 1)
    for c, k in ((4, 1), (6, 3)):  # two networks' untuned workloads, left by an earlier run
        _measure(parse_graph(CONV.format(c=c, k=k)), db, seed)
    queued = seed.persist()
    assert queued >= 2 and len(_wanted_lines(db)) == 2
    exp = Experiment.from_dict({"space": {"name": "nb201"},
                                "latency": {"policy": "auto", "tuned": True,
                                            "tune_trials": 1}}).to_dict()
    client = ServiceClient(exp, None)
    client._spawn()  # the run ends before it asks anything: the process takes the list ...
    final = client.close()  # ... and, told to end at once, saves it back
    assert final is not None and final["kind"] == "closed", final
    assert final["tuning_wanted_loaded"] == queued
    assert final["tuning_wanted_saved"] == queued == sum(len(e["keys"])
                                                         for e in _wanted_lines(db))
    assert final["tuning_pending"] == 0 and client.proc is None
