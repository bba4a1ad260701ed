"""The run commands end to end: search → runs / show / report / export; help and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nasir.cli import main
from nasir.commands import COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: nasir" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needles", [
    (["search", "--executor", "slurm"], ["--executor", "'slurm'", "inprocess", "pool", "ray"]),
    (["search", "--strategy", "nope"], ["--strategy", "'nope'", "regularized_evolution",
                                        "random"]),
    (["search", "--trials", "0"], ["--trials", "integer >= 1", "'0'"]),
    (["search", "--estimator", "magic"], ["--estimator", "training", "nb201", "oneshot"]),
    (["search", "--constraint", "params<lots"], ["--constraint", "METRIC<=NUMBER"]),
    (["export", "x", "--format", "tflite"], ["--format", "json, torch, onnx, tvm"]),
    (["resume", "x", "--executor", "k8s"], ["--executor", "inprocess, pool, ray"]),
])
def test_bad_options_give_one_line_naming_option_and_values(argv, needles, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err.replace("'inprocess', 'pool', 'ray'", "inprocess, pool, ray"), (n, err)


def test_unknown_space_is_one_line_naming_the_built_ins_and_the_user_forms(capsys):
    assert main(["search", "--space", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for n in ("'imagenet'", "nb201", "tiny_mnasnet", "file.py:function"):
        assert n in err, (n, err)


def test_bad_experiment_file_names_the_key_and_valid_values(tmp_path, capsys):
    f = tmp_path / "exp.toml"
    f.write_text('[budget]\ntrials = 3\nhours = 2\n')
    assert main(["search", "-c", str(f)]) == 2
    err = capsys.readouterr().err
    assert "budget.hours" in err and "trials, wall_time_s" in err and "Traceback" not in err
    f.write_text('[executor]\nkind = "mpi"\n')
    assert main(["search", "-c", str(f)]) == 2
    err = capsys.readouterr().err
    assert "executor.kind" in err and "'inprocess', 'pool' or 'ray'" in err


def test_unknown_run_is_a_clear_error(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "no run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small real hardware-aware search: training on digits + TVM host latency."""
    root = tmp_path_factory.mktemp("runs")
    run = str(root / "hw")
    code = main(["search", "--trials", "2", "--executor", "inprocess", "--seed", "2",
                 "--estimator-opt", "epochs=1", "--estimator-opt", "data_fraction=0.3",
                 "--strategy-opt", "population=2", "--strategy-opt", "sample=1",
                 "--run-dir", run, "--no-progress"])
    assert code == 0
    return run


def test_hardware_aware_search_records_accuracy_latency_and_reward(trained_run, capsys):
    from nasir.runtime.store import RunStore

    st = RunStore.open(trained_run)
    trials = st.trials()
    st.close()
    assert [t["status"] for t in trials] == ["done"] * 2
    for t in trials:
        m = t["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["latency_ms"] > 0 and m["params"] > 0
        want = m["accuracy"] * (m["latency_ms"] / 1.0) ** -0.07
        assert t["reward"] == pytest.approx(want)
        assert os.path.exists(os.path.join(trained_run, "weights", f"{t['hash']}.pt"))
    for name in ("best_so_far", "pareto", "best_arch"):
        for ext in ("png", "svg"):
            assert os.path.getsize(os.path.join(trained_run, "report", f"{name}.{ext}")) > 1000
    with open(os.path.join(trained_run, "report", "report.html")) as fh:
        html = fh.read()
    assert "<img" in html and "Pareto front" in html


def test_runs_and_show(trained_run, capsys):
    root = os.path.dirname(trained_run)
    assert main(["runs", "--root", root, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["hw"] and rows[0]["counts"]["done"] == 2
    assert main(["show", trained_run, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["best"]["reward"] == max(r["best"]["reward"] for r in rows)
    assert shown["pareto"]
    assert main(["show", trained_run]) == 0
    assert "Pareto front" in capsys.readouterr().out


def test_export_best_plain_torch_onnx_and_tvm(trained_run, tmp_path, capsys):
    import torch

    out = str(tmp_path / "exp")
    assert main(["export", trained_run, "--best", "--out", out, "--json"]) == 0
    man = json.loads(capsys.readouterr().out)
    assert man["weights"].startswith("trained")
    assert man["torch_max_abs_diff"] == 0.0
    assert man["onnx_max_abs_diff"] < 1e-4
    assert man["tvm_max_abs_diff"] < 1e-3 and os.path.exists(os.path.join(out, man["files_tvm"]))
    with open(os.path.join(out, "model.py")) as fh:
        src = fh.read()
    assert "nasir" not in src.split('"""', 2)[2]  # no nasir import or name in the code
    # the plain source runs in a fresh interpreter that cannot import nasir
    probe = (
        "import sys, builtins, torch\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] == 'nasir': raise ImportError('nasir is blocked')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        f"sys.path.insert(0, {out!r})\n"
        "import model\n"
        "net = model.Net(); net.load_state_dict(torch.load("
        f"{os.path.join(out, 'weights.pt')!r}, weights_only=True)); net.eval()\n"
        "x = torch.ones(2, *model.INPUT_SHAPE)\n"
        "print(net(x).sum().item())\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    from nasir.backends.torch import lower
    from nasir.runtime.worker import build_space

    with open(os.path.join(out, "arch.json")) as fh:
        arch = json.load(fh)
    space = build_space({"space": arch["space"]})
    ref = lower(space.instantiate(arch["assignment"]), seed=0)
    from nasir.runtime.export import backend_weights

    with open(os.path.join(out, "manifest.json")) as fh:
        modules = json.load(fh)["modules"]
    ref.load_state_dict(backend_weights(torch.load(os.path.join(out, "weights.pt"),
                                                   weights_only=True), modules))
    ref.eval()
    with torch.no_grad():
        want = ref(torch.ones(2, 1, 8, 8)).sum().item()
    assert np.isclose(float(r.stdout.strip()), want, rtol=1e-5, atol=1e-5)


def test_readme_experiment_file_is_valid(tmp_path):
    import re

    from nasir.runtime.experiment import load_experiment

    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    with open(readme, encoding="utf-8") as fh:
        blocks = re.findall(r"```toml\n(.*?)```", fh.read(), re.S)
    assert blocks
    f = tmp_path / "exp.toml"
    f.write_text(blocks[0])
    exp = load_experiment(str(f))
    assert exp.strategy.options == {"population": 8, "sample": 3}
    assert exp.constraints == {"params": 60000} and exp.budget.trials == 64
