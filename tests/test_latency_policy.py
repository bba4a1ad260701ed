"""The latency policy (issue 23): measure | predict | auto, end to end on a tiny space.

Real runs: a 12-architecture space on 3×8×8 inputs, a user evaluator that scores from the
parameter count (no training), TVM on the host for the table and the networks. The table
is shared by the module's runs (as it is shared by a user's runs), so each layer is
measured once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from nasir.cli import main
from nasir.runtime.store import RunStore

SPACE = '''
from nasir.dsl import SpaceBuilder
from nasir.ops import ConvBNActOp, FlattenOp, GlobalAvgPoolOp, IdentityOp, LinearOp


def build(input_shape=(3, 8, 8), num_classes=10):
    s = SpaceBuilder("lat", input_shape)
    w = s.value("width", [4, 8, 16])
    k = s.value("kernel", [1, 3])
    x = s.op(ConvBNActOp(out_channels=w, kernel=k), s.input)
    x = s.choose("extra", {"conv": lambda b, h: b.op(ConvBNActOp(out_channels=w), h),
                           "skip": lambda b, h: b.op(IdentityOp(), h)}, x)
    x = s.op(LinearOp(out_features=num_classes), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x)
'''

EVALUATOR = '''
from nasir.passes.analysis import analyze


def evaluate(trial):
    return {"accuracy": min(1.0, analyze(trial.graph)["params"] / 3000.0)}
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("latency_policy")
    (d / "space.py").write_text(SPACE)
    (d / "ev.py").write_text(EVALUATOR)
    return d


def _search(project, run: str, policy: str, trials: int, *extra: str) -> int:
    return main(["search", "--space", str(project / "space.py") + ":build",
                 "--evaluator", str(project / "ev.py") + ":evaluate",
                 "--objective", "accuracy:max", "--objective", "latency_ms:min",
                 "--reward", "mnasnet", "--latency-target", "0.05",
                 "--latency-policy", policy, "--executor", "inprocess", "--seed", "1",
                 "--trials", str(trials), "--run-dir", run, "--no-progress", *extra])


def _config(project, policy: str, **latency):
    """An experiment file with ``[latency]`` settings and the shared table."""
    lines = ["[latency]", f'policy = "{policy}"', f'table = "{project / "lut.sqlite"}"']
    lines += [f"{k} = {v}" for k, v in latency.items()]
    f = project / f"exp_{policy}_{len(latency)}.toml"
    f.write_text("\n".join(lines) + "\n")
    return str(f)


def _trials(run: str) -> tuple[list[dict], dict]:
    st = RunStore.open(run)
    try:
        return st.trials(), {"summary": st.meta("latency.summary"),
                             "calibration": st.meta("latency.calibration")}
    finally:
        st.close()


@pytest.fixture(scope="module")
def auto_run(project):
    run = str(project / "auto")
    cfg = _config(project, "auto", top_k=1, calibration=0.5)
    assert _search(project, run, "auto", 6, "-c", cfg) == 0
    return run


def _fastest_path(m: dict) -> None:
    """A measured latency on the host is the fastest of TVM and ONNX Runtime (``latency.paths``
    ``auto``), and the trial says which and what each took."""
    paths = m["latency_paths_ms"]
    assert sorted(paths) == ["onnxruntime", "tvm"] and all(v > 0 for v in paths.values())
    assert m["latency_path"] == min(paths, key=paths.get)
    assert m["latency_ms"] == pytest.approx(paths[m["latency_path"]], abs=1e-6)


def test_auto_measures_the_whole_final_front_and_rescores(auto_run):
    from nasir.runtime.results import pareto_trials

    trials, meta = _trials(auto_run)
    done = [t for t in trials if t["status"] == "done"]
    assert len(done) == 6
    front = pareto_trials(done, {"accuracy": "max", "latency_ms": "min"})
    assert front and all(t["metrics"]["latency_source"] == "measured" for t in front)
    for t in done:
        m = t["metrics"]
        assert m["latency_source"] in ("measured", "predicted")
        assert m["latency_table_ms"] > 0 and m["latency_predicted_ms"] > 0
        if m["latency_source"] == "measured":  # both kept; the trial carries the measurement
            assert m["latency_ms"] == m["latency_measured_ms"] > 0
            _fastest_path(m)
        else:
            assert m["latency_ms"] == m["latency_predicted_ms"] and "latency_measured_ms" not in m
        # the reward is the MnasNet reward of the latency the trial carries
        assert t["reward"] == pytest.approx(m["accuracy"] * (m["latency_ms"] / 0.05) ** -0.07)
    assert meta["summary"]["policy"] == "auto"
    assert meta["summary"]["measured"] == sum(t["metrics"]["latency_source"] == "measured"
                                              for t in done)


def test_auto_refits_the_calibration_per_measurement(auto_run):
    from nasir.runtime.latency_policy import Calibration

    trials, meta = _trials(auto_run)
    pairs = [(t["metrics"]["latency_table_ms"], t["metrics"]["latency_measured_ms"])
             for t in trials if "latency_measured_ms" in t["metrics"]]
    cal = meta["calibration"]
    assert len(pairs) >= 2 and cal["points"] == len(pairs) and cal["refits"] == len(pairs)
    again = Calibration()
    again.fit(pairs)  # the stored fit is the fit of the stored pairs
    assert again.slope == pytest.approx(cal["slope"])
    assert again.intercept == pytest.approx(cal["intercept"])


def test_calibration_fits_relative_error():
    """Networks from 40 µs to 4 ms: the fit minimises the squared *relative* miss (what the
    reward and the table's MAPE weigh), not the absolute one plain least squares does."""
    import numpy as np

    from nasir.runtime.latency_policy import Calibration

    rng = np.random.default_rng(3)
    x = np.exp(rng.uniform(np.log(0.04), np.log(4.0), 40))
    y = (1.1 * x + 0.01) * np.exp(rng.normal(0, 0.05, x.size))
    cal = Calibration()
    assert cal.fit(list(zip(x, y, strict=True))) and cal.points == 40

    def rel_sq(a: float, b: float) -> float:
        return float(np.sum(((a * x + b) / y - 1) ** 2))

    fa, fb = np.polyfit(x, y, 1)
    assert rel_sq(cal.slope, cal.intercept) < rel_sq(fa, fb)
    for da, db in [(1e-3, 0), (-1e-3, 0), (0, 1e-4), (0, -1e-4)]:  # and it is the minimum
        assert rel_sq(cal.slope, cal.intercept) <= rel_sq(cal.slope + da, cal.intercept + db)


def test_report_shows_predicted_and_measured(auto_run):
    with open(os.path.join(auto_run, "report", "report.md")) as fh:
        md = fh.read()
    assert "## Latency" in md and "policy **auto**" in md and "Kendall" in md
    assert "| latency_source | latency_predicted_ms | latency_measured_ms |" in md
    assert "Deployment paths (a measured latency is the fastest of them):" in md
    png = os.path.join(auto_run, "report", "latency_predicted_vs_measured.png")
    assert os.path.getsize(png) > 1000


def test_predict_never_compiles_a_network(project):
    run = str(project / "predict")
    assert _search(project, run, "predict", 4, "-c", _config(project, "predict"),
                   "--no-report") == 0
    trials, meta = _trials(run)
    assert [t["status"] for t in trials] == ["done"] * 4
    assert all(t["metrics"]["latency_source"] == "predicted" for t in trials)
    assert not any("latency_measured_ms" in t["metrics"] or "compile_s" in t["metrics"]
                   for t in trials)
    assert meta["summary"]["measured"] == 0 and meta["calibration"] is None
    # no network reached the run's latency cache: it was never even opened
    assert not os.path.exists(os.path.join(run, "latency.sqlite"))


def test_measure_compiles_and_measures_every_trial(project):
    run = str(project / "measure")
    assert _search(project, run, "measure", 3, "--no-report", "--latency-settle", "0.5") == 0
    trials, meta = _trials(run)
    assert [t["status"] for t in trials] == ["done"] * 3
    for t in trials:
        m = t["metrics"]
        assert m["latency_source"] == "measured" and m["latency_ms"] == m["latency_measured_ms"]
        assert "latency_table_ms" not in m and m["compile_s"] is not None
        _fastest_path(m)
        assert 0 < m["latency_speed"] <= 1  # latency.settle_s: the speed it was timed at
    with sqlite3.connect(os.path.join(run, "latency.sqlite")) as db:
        rows = db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]
    assert rows == len({t["hash"] for t in trials})
    assert meta["summary"] is None  # no measurement process: the workers measured


def test_latency_paths_tvm_measures_the_tvm_library_alone(project):
    run = str(project / "measure_tvm")
    assert _search(project, run, "measure", 2, "--no-report", "--latency-paths", "tvm",
                   "--latency-settle", "0.5") == 0
    trials, _ = _trials(run)
    assert [t["status"] for t in trials] == ["done"] * 2
    assert not any("latency_path" in t["metrics"] for t in trials)
    assert all(0 < t["metrics"]["latency_speed"] <= 1 for t in trials)
    # a separate cache key: the fastest-path figure is never served as the TVM one
    with sqlite3.connect(os.path.join(project / "measure", "latency.sqlite")) as db:
        keys = {r[0] for r in db.execute("SELECT target FROM latency")}
    assert keys and all(k.endswith(":onnxruntime+tvm") for k in keys)


@pytest.mark.parametrize("args, text", [
    (["--latency-paths", "tensorrt"], "unknown path 'tensorrt'"),
    (["--latency-paths", "onnxruntime", "--target", "rpc"], "latency.paths 'onnxruntime'"),
    (["--latency-paths", "eager", "--target-spec", "aarch64"], "latency.paths 'eager'"),
])
def test_a_path_that_cannot_run_here_fails_before_a_run_folder(tmp_path, capsys, args, text):
    run = str(tmp_path / "never")
    try:
        code = main(["search", "--latency", "on", "--run-dir", run, "--no-progress", *args])
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    assert code == 2 and text in capsys.readouterr().err
    assert not os.path.exists(run)


def test_unknown_policy_on_the_command_line_fails_before_a_run_folder(tmp_path, capsys):
    run = str(tmp_path / "never")
    with pytest.raises(SystemExit) as e:
        main(["search", "--latency-policy", "fast", "--run-dir", run])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    assert not os.path.exists(run)


def test_predict_on_a_remote_target_fails_before_a_run_folder(tmp_path, capsys):
    run = str(tmp_path / "never")
    assert main(["search", "--latency-policy", "predict", "--target", "rpc",
                 "--run-dir", run, "--no-progress"]) == 2
    assert "latency.policy 'predict'" in capsys.readouterr().err
    assert not os.path.exists(run)


@pytest.mark.parametrize("latency, text", [
    ({"calibration": 2}, "latency.calibration"),
    ({"top_k": 0}, "latency.top_k"),
    ({"cores": 0}, "latency.cores"),
])
def test_bad_policy_in_a_file_fails_before_a_run_folder(project, tmp_path, capsys, latency,
                                                        text):
    run = str(tmp_path / "never")
    assert _search(project, run, "auto", 2, "-c", _config(project, "auto", **latency)) == 2
    err = capsys.readouterr().err
    assert text in err
    assert not os.path.exists(run)


def test_tuned_compiles_from_the_targets_tuning_database(tmp_path, monkeypatch):
    from nasir.backends.tvm.tuning_db import TuningDatabase
    from nasir.errors import NasirError
    from nasir.runtime.latency_service import tuned_compile_options

    monkeypatch.setenv("NASIR_CACHE_DIR", str(tmp_path / "cache"))
    db = tuned_compile_options("host")["db"]
    assert isinstance(db, TuningDatabase)
    assert db.path.startswith(str(tmp_path / "cache" / "tuning"))
    assert os.path.isdir(os.path.join(db.path, "workloads"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NASIR_CACHE_DIR", str(blocker))
    with pytest.raises(NasirError, match="tuning database"):
        tuned_compile_options("host")


def test_quiet_window_moves_training_threads_off_the_measurement_cores():
    from nasir.runtime.latency_service import quiet_window

    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        pytest.skip("needs Linux CPU affinity and two CPUs")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        before = os.sched_getaffinity(child.pid)
        cores = {max(before)}
        with quiet_window([child.pid], cores) as moved:
            inside = os.sched_getaffinity(child.pid)
        assert moved >= 1 and not inside & cores and inside
        assert os.sched_getaffinity(child.pid) == before
    finally:
        child.kill()
        child.wait()


def test_budget_zero_defers_new_layers_to_the_next_build(project, tmp_path):
    """``latency.budget = 0``: the run compiles no layer it can estimate (only the first
    trial's, when nothing is known) and measures only the final front; the trials whose
    layers it skipped are kept in the table's file, and ``build_table`` measures them."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.latency_table import PolicyLUT, build_table, measure_setup
    from nasir.runtime.results import pareto_trials
    from nasir.runtime.worker import build_space

    run, table = str(tmp_path / "run"), tmp_path / "cold.sqlite"
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'[latency]\npolicy = "auto"\ntable = "{table}"\nbudget = 0\n'
                   "calibration = 0\ntop_k = 1\n")
    assert _search(project, run, "auto", 3, "-c", str(cfg), "--no-report") == 0
    trials, meta = _trials(run)
    done = [t for t in trials if t["status"] == "done"]
    front = pareto_trials(done, {"accuracy": "max", "latency_ms": "min"})
    assert front and all(t["metrics"]["latency_source"] == "measured" for t in front)
    s = meta["summary"]
    estimated = [t for t in done if t["metrics"].get("latency_estimated_layers")]
    assert s["budget"] == 0 and s["estimated"] == len(estimated) >= 1
    # the only layers compiled in the run are those of the trials that waited (cold table)
    waited = [t for t in done if "latency_estimated_layers" not in t["metrics"]]
    assert s["new_layers"] >= 1 and len(waited) >= 1

    st = RunStore.open(run)
    try:
        exp = Experiment.from_dict(st.config)
    finally:
        st.close()
    space = build_space(exp.to_dict(), run)
    target, mcfg = measure_setup(exp)
    lut = PolicyLUT(str(table), target, config=mcfg, scope=space.name)
    pending = lut.pending()
    assert len(pending) == s["deferred"] == len({t["hash"] for t in estimated})
    assert all(lut.lookup(space.instantiate(space.check(a))) is None for a in pending)
    lut.close()

    out = build_table(exp, space)
    assert out["deferred_done"] == len(pending) and out["measured"] >= 1
    lut = PolicyLUT(str(table), target, config=mcfg, scope=space.name)
    try:
        assert lut.pending() == []
        assert all(lut.lookup(space.instantiate(space.check(a))) is not None for a in pending)
    finally:
        lut.close()


def test_a_bad_budget_fails_before_a_run_folder(project, tmp_path, capsys):
    run = str(tmp_path / "never")
    assert _search(project, run, "auto", 2, "-c", _config(project, "auto", budget=-1)) == 2
    assert "latency.budget" in capsys.readouterr().err and not os.path.exists(run)


def test_waiting_measurements_go_front_first_within_the_budget(tmp_path):
    """The runner's choice, without a process: nothing is sent past the budget; then the
    front goes before the top-k, and a trial that left both is dropped, not measured."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.latency_policy import LatencyRunner

    exp = Experiment.from_dict({"latency": {"top_k": 1, "calibration": 0, "budget": 0.5}})
    st = RunStore.create(str(tmp_path / "run"), exp.to_dict())
    runner = LatencyRunner(exp, st, reward=lambda m: m["accuracy"], violation=lambda m: None)
    sent: list[tuple] = []
    runner.client.send = lambda req: sent.append(req)  # the pipe, not the policy
    trials: dict[int, dict] = {}

    def record(acc: float, lat: float, eval_s: float) -> dict:
        tid = st.add_trial({"x": len(trials)}, f"h{len(trials)}")
        st.finish_trial(tid, "done", reward=acc, eval_s=eval_s, metrics={
            "accuracy": acc, "latency_ms": lat, "latency_source": "predicted"})
        runner.recorded(st.trial(tid), trials)
        return trials[tid]

    runner.measured_s = 10.0  # busy past 0.5 × trained seconds: everything waits
    c = record(0.4, 2.0, 4.0)  # alone: front and top-1, but b will dominate it
    b = record(0.5, 0.5, 4.0)  # front (fastest), top-1 until a comes
    a = record(0.9, 1.0, 4.0)  # front and top-1
    assert record(0.3, 3.0, 4.0)["id"] not in runner.wanted  # dominated when it arrives
    assert sent == [] and set(runner.wanted) == {a["id"], b["id"], c["id"]}
    runner.trained_s = 100.0  # the budget allows again: the best-rewarded front trial first
    runner._pump()
    assert sent == [("measure", a["id"], a["assignment"])]
    runner.client.inflight.clear()
    runner._pump()
    assert sent[-1] == ("measure", b["id"], b["assignment"])
    assert runner.wanted == {} and runner.counts["dropped"] == 1
    st.close()


def test_latency_table_command_builds_the_table_apart_from_runs(project, tmp_path, capsys):
    """``nasir latency-table``: the references' and N candidates' layers measured into the
    experiment's table; a second build measures nothing new; a run on the warm table then
    compiles no layer (every trial answered from the table)."""
    import json

    table = tmp_path / "warm.sqlite"
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'[latency]\npolicy = "predict"\ntable = "{table}"\n')
    argv = ["latency-table", "-c", str(cfg), "--space", str(project / "space.py") + ":build",
            "--evaluator", str(project / "ev.py") + ":evaluate", "--candidates", "30",
            "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["table"] == str(table) and first["layers_before"] == 0
    assert first["measured"] == first["layers"] >= 3
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["measured"] == 0 and again["layers"] == first["layers"]
    with pytest.raises(SystemExit) as e:
        main([*argv[:-3], "--candidates", "-1"])
    assert e.value.code == 2 and "integer >= 0" in capsys.readouterr().err

    run = str(tmp_path / "run")
    assert _search(project, run, "predict", 4, "-c", str(cfg), "--no-report") == 0
    trials, meta = _trials(run)
    assert sum(t["status"] == "done" for t in trials) == 4
    assert meta["summary"]["new_layers"] == 0  # the warm table answered every trial
