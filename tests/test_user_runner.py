"""The runner opened to its users: their space file, their data, their evaluator.

Every command runs in a fresh subprocess from a temporary folder outside the repo, as a new
user would: search → ``kill -9`` mid-run → resume → report → export → the exported
``model.py`` runs in plain PyTorch on the user's data. The same through ``nasir.optimize``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from _sqlite_poll import read_only

SPACE = '''
from nasir.dsl import SpaceBuilder
from nasir.ops import ConvBNActOp, FlattenOp, GlobalAvgPoolOp, IdentityOp, LinearOp


def build(input_shape=(1, 8, 8), num_classes=10):
    s = SpaceBuilder("mine", input_shape)
    w = s.value("width", [4, 8, 12])
    k = s.value("kernel", [1, 3])
    x = s.op(ConvBNActOp(out_channels=w, kernel=k), s.input)
    x = s.choose("extra", {"conv": lambda b, h: b.op(ConvBNActOp(out_channels=w), h),
                           "skip": lambda b, h: b.op(IdentityOp(), h)}, x)
    x = s.op(LinearOp(out_features=num_classes), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x, references={"small": {"width": 4, "kernel": 1, "extra": "skip"}})
'''

OBJECTIVE = '''
import time

import torch
import torch.nn.functional as F


def _tensors(split):
    xs = torch.stack([split[i][0] for i in range(len(split))])
    ys = torch.tensor([int(split[i][1]) for i in range(len(split))])
    return xs, ys


def evaluate(trial):
    torch.manual_seed(trial.seed)
    model = trial.build_module()
    (x, y), (xv, yv) = _tensors(trial.data.train), _tensors(trial.data.val)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    acc = 0.0
    for epoch in range(trial.options.get("epochs", 3)):
        model.train()
        for i in range(0, len(x), 32):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        trial.report(epoch, acc)
    time.sleep(trial.options.get("sleep", 0.0))
    return {"accuracy": acc}
'''

SCRIPT = '''
import sys

import nasir
from objective import evaluate

if __name__ == "__main__":
    r = nasir.optimize("myspace.py:build", evaluate, data="npz:data.npz", trials=TRIALS,
                       run=sys.argv[1], objectives=["accuracy:max", "params:min"],
                       evaluator_options={"sleep": 0.4}, workers=2, progress=False)
    print("DONE", r.counts["done"])
'''

TRIALS = 6


def _write_project(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "myspace.py").write_text(SPACE)
    (folder / "objective.py").write_text(OBJECTIVE)
    (folder / "run_search.py").write_text(SCRIPT.replace("TRIALS", str(TRIALS)))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=240).astype(np.int16)  # a non-int64 label dtype on purpose
    x = (0.15 + 0.3 * y[:, None, None, None] + 0.08 * rng.standard_normal((240, 1, 10, 10)))
    yt = rng.integers(0, 3, size=60).astype(np.int16)
    xt = (0.15 + 0.3 * yt[:, None, None, None] + 0.08 * rng.standard_normal((60, 1, 10, 10)))
    np.savez(folder / "data.npz", x=x.astype(np.float32), y=y, x_test=xt.astype(np.float32),
             y_test=yt)


def _nasir(*args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "nasir", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"nasir {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def _kill_after(proc: subprocess.Popen, db: str, finished: int, timeout: float = 120) -> int:
    """SIGKILL ``proc``'s process group once ``finished`` trials are done; returns how many
    were done then."""
    deadline = time.time() + timeout
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if not os.path.exists(db):
            continue
        try:
            con = read_only(db)
            done = con.execute("SELECT COUNT(*) FROM trials WHERE status='done'").fetchone()[0]
            con.close()
        except sqlite3.Error:
            continue
        if done >= finished:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return done
    proc.kill()
    raise AssertionError(f"the run ended or stalled before {finished} trials were done: "
                         f"{proc.stderr.read() if proc.stderr else ''}")


def _start_and_kill(cmd: list[str], cwd, run: str) -> None:
    """Start ``cmd`` in its own process group and SIGKILL it mid-run (2 trials done)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    done = _kill_after(proc, os.path.join(run, "run.sqlite"), 2)
    assert 2 <= done < TRIALS


def _trials(run: str) -> list[dict]:
    con = sqlite3.connect(os.path.join(run, "run.sqlite"))
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM trials ORDER BY id")]
    con.close()
    return rows


PLAIN_TORCH = '''
import importlib.util, json, sys
import numpy as np
import torch

spec = importlib.util.spec_from_file_location("exported", sys.argv[1] + "/model.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert "nasir" not in sys.modules, "the exported model imported nasir"
net = mod.Net()
net.load_state_dict(torch.load(sys.argv[1] + "/weights.pt", weights_only=True))
net.eval()
d = np.load(sys.argv[2])
with torch.no_grad():
    out = net(torch.from_numpy(d["x"]))
acc = float((out.argmax(1).numpy() == d["y"]).mean())
print(json.dumps({"shape": list(out.shape), "accuracy": acc}))
'''


def _exported_model_runs(export_dir: str, npz: str, cwd) -> dict:
    r = subprocess.run([sys.executable, "-c", PLAIN_TORCH, export_dir, npz], cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check_run_from_elsewhere(run: str, project, other, expect_trials: int) -> None:
    rows = _trials(run)
    assert [r["status"] for r in rows] == ["done"] * expect_trials
    assert len({r["hash"] for r in rows}) == expect_trials  # nothing evaluated twice
    shown = _nasir("show", run, cwd=other).stdout
    assert "myspace.py:build" in shown and f"done {expect_trials}" in shown
    _nasir("report", run, cwd=other)
    with open(os.path.join(run, "report", "report.md")) as fh:
        report = fh.read()
    assert "## Test split" in report  # the kept weights of the best, scored once on test
    row = next(line for line in report.splitlines()[report.splitlines().index("## Test split"):]
               if line.startswith("| ") and line[2].isdigit())
    assert float(row.split("|")[2]) > 0.6 and row.split("|")[3].strip() == "60"
    out = str(other / "export")
    _nasir("export", run, "--best", "--out", out, "--format", "json,torch", cwd=other)
    with open(os.path.join(out, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["weights"].startswith("trained"), manifest["weights"]
    res = _exported_model_runs(out, str(project / "data.npz"), other)
    assert res["shape"] == [240, 3]
    assert res["accuracy"] > 0.6  # trained weights on an easy 3-class task (chance: 1/3)


@pytest.mark.slow
def test_cli_user_space_data_evaluator_kill_resume_report_export(tmp_path):
    project, other = tmp_path / "project", tmp_path / "elsewhere"
    _write_project(project)
    other.mkdir()
    run = str(project / "runs" / "mine")
    _start_and_kill([sys.executable, "-m", "nasir", "search", "--space", "myspace.py:build",
                     "--data", "npz:data.npz", "--evaluator", "objective.py:evaluate",
                     "--evaluator-opt", "sleep=0.4", "--objective", "accuracy:max",
                     "--objective", "params:min", "--trials", str(TRIALS), "--workers", "2",
                     "--run-dir", "runs/mine", "--no-progress", "--no-report"], project, run)
    r = _nasir("resume", run, "--no-progress", cwd=other)
    assert "finished" in r.stdout or f"{TRIALS} done" in r.stdout
    _check_run_from_elsewhere(run, project, other, TRIALS)
    cfg = json.loads(sqlite3.connect(os.path.join(run, "run.sqlite")).execute(
        "SELECT value FROM meta WHERE key='config'").fetchone()[0])
    assert cfg["space"]["options"] == {"input_shape": [1, 10, 10], "num_classes": 3}
    assert cfg["reward"]["kind"] == "auto" and cfg["estimator"]["kind"] == "evaluator"


@pytest.mark.slow
def test_python_entry_point_kill_rerun_resumes_report_export(tmp_path):
    project, other = tmp_path / "project", tmp_path / "elsewhere"
    _write_project(project)
    other.mkdir()
    run = str(project / "runs" / "py")
    cmd = [sys.executable, "run_search.py", run]
    _start_and_kill(cmd, project, run)
    r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"DONE {TRIALS}" in r.stdout
    _check_run_from_elsewhere(run, project, other, TRIALS)


def test_search_three_trials_from_outside_the_repo_then_show_from_another_folder(tmp_path):
    project, other = tmp_path / "project", tmp_path / "elsewhere"
    _write_project(project)
    other.mkdir()
    _nasir("search", "--space", "myspace.py:build", "--data", "npz:data.npz", "--trials", "3",
           "--latency", "off", "--estimator-opt", "epochs=1", "--run-dir", "runs/t3",
           "--no-progress", "--no-report", cwd=project)
    run = str(project / "runs" / "t3")
    rows = _trials(run)
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    assert all(0.0 <= json.loads(r["metrics"])["accuracy"] <= 1.0 for r in rows)
    assert "myspace.py:build" in _nasir("show", run, cwd=other).stdout
    # the user edits the space file: the run keeps using the copy it kept, and says so
    (project / "myspace.py").write_text(SPACE.replace("[4, 8, 12]", "[4, 8, 12, 16]"))
    r = _nasir("resume", run, "--trials", "4", "--no-progress", "--no-report", cwd=other)
    assert "changed since the run began" in r.stderr
    assert len(_trials(run)) == 4


BAD_STARTS = [
    (["--data", "imagenet22k"], "unknown data set 'imagenet22k'"),
    (["--data", "cifar10", "--data-opt", "root=nodata"], "data_batch_1.bin"),
    (["--space", "fixed.py:build"], "takes inputs of shape [3, 32, 32] but the data has"),
    (["--space", "myspace.py:build", "--data", "npz:data.npz", "--space-opt",
      "num_classes=5"], "num_classes=5 does not fit the data"),
    (["--estimator-opt", "epocs=3"], "unknown training estimator option 'epocs'"),
    (["--evaluator", "nowhere.py:evaluate"], "nowhere.py not found"),
    (["--evaluator", "no_such_module_xyz:evaluate"], "cannot import module"),
    (["--strategy-opt", "populaton=4"], "unknown regularized_evolution strategy option"),
]

FIXED = '''
from nasir.dsl import SpaceBuilder
from nasir.ops import ConvBNActOp, FlattenOp, GlobalAvgPoolOp, LinearOp


def build():
    s = SpaceBuilder("fixed", (3, 32, 32))
    x = s.op(ConvBNActOp(out_channels=s.value("w", [4, 8])), s.input)
    return s.build(s.op(LinearOp(out_features=10), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))))
'''


@pytest.mark.parametrize("args,needle", BAD_STARTS, ids=[a[1] for a in BAD_STARTS])
def test_wrong_inputs_stop_at_start_with_one_line_and_no_run(tmp_path, args, needle, capsys):
    from nasir.cli import main

    _write_project(tmp_path)
    (tmp_path / "fixed.py").write_text(FIXED)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["search", *args, "--trials", "2", "--run-dir", "runs/bad", "--no-progress"])
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    assert code == 2
    first = err.strip().splitlines()[0]
    assert first.startswith("nasir: error: ") and needle in first, err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "runs")


def test_space_specs_everywhere(tmp_path):
    """A user file, a module:function, a registered name and an entry point name a space for
    ``get_space``, ``nasir show`` and ``nasir spaces`` alike."""
    from nasir.spaces import get_space, register_space

    _write_project(tmp_path)
    (tmp_path / "user_spaces_mod.py").write_text(SPACE)
    dist = tmp_path / "user_spaces_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-spaces-pkg\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[nasir.spaces]\nep_space = user_spaces_mod:build\n")
    sp = get_space("myspace.py:build", base_dir=str(tmp_path), num_classes=3)
    assert sp.name == "mine" and len(sp.decisions) == 3
    register_space("registered_mine", lambda **kw: sp)
    assert get_space("registered_mine") is sp
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}" + os.environ.get("PYTHONPATH",
                                                                                  ""))
    for spec in ("myspace.py:build", "user_spaces_mod:build", "ep_space"):
        r = subprocess.run([sys.executable, "-m", "nasir", "show", f"{spec}:small", "--json"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, (spec, r.stderr)
        out = json.loads(r.stdout)
        assert out["space"] == "mine" and out["assignment"]["extra"] == "skip"
    r = subprocess.run([sys.executable, "-m", "nasir", "spaces", "ep_space", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["references"] == ["small"]


def test_objective_direction_min_is_what_every_strategy_optimises(tmp_path):
    """With ``params:min`` the reward is ``-params``: the best trial is the smallest network
    and evolution's later trials are smaller than random ones."""
    from nasir.runtime.optimize import optimize

    r = optimize("nb201", "nasir.runtime.optimize:_example_objective", trials=30,
                 strategy="evolution", strategy_options={"population": 8, "sample": 4},
                 objectives="params:min", run=str(tmp_path / "evo"), progress=False, seed=1)
    trials = r.trials()
    params = [t["metrics"]["params"] for t in trials]
    assert r.best["metrics"]["params"] == min(params)
    assert all(t["reward"] == -t["metrics"]["params"] for t in trials)
    assert np.mean(params[-10:]) < np.mean(params[:8])  # selection drives params down


def test_median_pruning_stops_a_poor_trial_and_keeps_its_last_value(tmp_path):
    from nasir.runtime.optimize import optimize

    (tmp_path / "prune_obj.py").write_text(textwrap.dedent('''
        def evaluate(trial):
            width = trial.assignment["width"]
            value = 0.0
            for step in range(4):
                value = width / 12 * (step + 1) / 4
                trial.report(step, value)
            return {"accuracy": value}
    '''))
    (tmp_path / "myspace.py").write_text(SPACE)
    r = optimize(str(tmp_path / "myspace.py") + ":build", str(tmp_path / "prune_obj.py")
                 + ":evaluate", trials=12, strategy="random", run=str(tmp_path / "run"),
                 progress=False, seed=3, space_options={"num_classes": 3})
    trials = r.trials()
    assert len(trials) == 12
    pruned = [t for t in trials if "pruned_at" in t["metrics"]]
    assert pruned, "no trial was pruned"
    for t in pruned:
        m = t["metrics"]
        assert t["assignment"]["width"] < 12  # only narrower ones fall under the median
        assert m["accuracy"] == m["intermediate"][str(m["pruned_at"])]
    assert all("pruned_at" not in t["metrics"] for t in trials[:5])  # startup trials


def test_a_space_object_or_registered_name_survives_a_fresh_process(tmp_path):
    """A run made from Python with a Space object (or a name registered in that process)
    is shown, reported and exported by fresh processes from another folder: the run keeps
    the space's text form."""
    from nasir.runtime.optimize import optimize
    from nasir.spaces import get_space, register_space

    sp = get_space("nb201", channels=4, cells_per_stage=1, input_shape=(1, 8, 8))
    r = optimize(sp, "nasir.runtime.optimize:_example_objective", trials=3,
                 objectives="params:min", run=str(tmp_path / "obj"), progress=False)
    register_space("only_in_this_process", lambda: sp)
    r2 = optimize("only_in_this_process", "nasir.runtime.optimize:_example_objective",
                  trials=2, objectives="params:min", run=str(tmp_path / "reg"),
                  progress=False)
    for res in (r, r2):
        shown = _nasir("show", res.run_dir, cwd=tmp_path.parent).stdout
        assert "status=finished" in shown and "params" in shown
        out = str(tmp_path / f"export-{os.path.basename(res.run_dir)}")
        _nasir("export", res.run_dir, "--best", "--out", out, "--format", "json,torch",
               cwd=tmp_path.parent)
        with open(os.path.join(out, "arch.json")) as fh:
            assert json.load(fh)["assignment"] == dict(res.best["assignment"])


def test_a_space_object_with_user_ops_survives_a_fresh_process(tmp_path):
    """The run keeps the files declaring the space's user ops; a fresh process imports them
    before it parses the space's text form."""
    import pathlib

    from nasir.runtime.optimize import optimize
    from nasir.userload import load_file_module

    example = pathlib.Path(__file__).parent.parent / "docs" / "examples" / "user_op_space.py"
    src = tmp_path / "user_op_space.py"  # op names of its own: the example's are taken
    src.write_text(example.read_text().replace('"gelu"', '"runner_gelu"')
                   .replace('"layer_norm"', '"runner_layer_norm"')
                   .replace('"self_attention"', '"runner_self_attention"'))
    sp = load_file_module(str(src)).build()
    r = optimize(sp, "nasir.runtime.optimize:_example_objective", trials=2,
                 objectives="params:min", run=str(tmp_path / "run"), progress=False)
    src.unlink()  # only the run's copy is left
    out = str(tmp_path / "export")
    _nasir("export", r.run_dir, "--best", "--out", out, "--format", "json,torch",
           cwd=tmp_path.parent)
    with open(os.path.join(out, "arch.json")) as fh:
        assert json.load(fh)["assignment"] == dict(r.best["assignment"])


def test_a_full_disk_at_start_is_a_store_error_and_leaves_no_run(tmp_path, monkeypatch):
    import errno

    import nasir.runtime.run_space as run_space
    from nasir.errors import StoreError
    from nasir.runtime.driver import run_search
    from nasir.runtime.experiment import Experiment

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_space, "keep_space", full)
    exp = Experiment.from_dict({"space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
                                "strategy": {"name": "random"}, "budget": {"trials": 2},
                                "executor": {"kind": "inprocess"}})
    with pytest.raises(StoreError, match="No space left on device"):
        run_search(exp, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
