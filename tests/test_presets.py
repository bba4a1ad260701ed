"""Paper presets (issue 21): listed with paper, settings and deviations; every option checked
against the registry by the preflight; scaled by --trials / --epochs; overridden by flags;
docs/papers.md generated from them; and each one run end to end at a tiny budget."""

from __future__ import annotations

import json
import os
import re

import pytest

from nasir.cli import build_parser, main
from nasir.commands.search import experiment_from_args
from nasir.runtime.preflight import prepare
from nasir.runtime.presets import all_presets, get_preset, papers_table
from nasir.runtime.store import RunStore

NAMES = ["nasrl", "nasnet", "metaqnn", "pnas", "enas", "mnasnet", "amoebanet",
         "proxylessnas", "fbnet", "darts", "netadapt"]
ONESHOT = ("enas", "proxylessnas", "fbnet", "darts", "netadapt")
DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "papers.md")


def _args(*argv: str):
    return build_parser().parse_args(["search", *argv])


def test_presets_json_lists_all_eleven_with_paper_settings_and_deviations(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == NAMES
    for r in rows:
        assert r["paper"] and r["system"] and r["paper_setting"], r["name"]
        s = r["settings"]
        assert s["space"]["name"] and s["strategy"]["name"] and s["estimator"]["kind"]
        assert s["budget"]["trials"] == r["budget"]["paper_trials"] >= 1
        assert isinstance(r["deviations"], list)
        assert all(isinstance(d, str) and len(d) > 20 for d in r["deviations"]), r["name"]


def test_presets_table_and_markdown(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES)
    assert main(["presets", "--markdown"]) == 0
    assert capsys.readouterr().out == papers_table()


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_option_exists(name):
    """The preflight builds the space, the strategy (unknown options are errors) and the
    reward and checks the estimator's options: at the paper's budget and at a tiny one."""
    p = get_preset(name)
    tiny = 3 if name == "enas" else 2  # ENAS: a child, a derivation child, the derived one
    for trials, epochs in ((None, None), (tiny, 1)):
        prepared = prepare(p.experiment(trials, epochs), smoke=False)
        assert prepared.exp.strategy.name == p.strategy
        assert prepared.space.decisions or name == "netadapt"


def test_unknown_preset_is_one_line_naming_the_valid_ones(capsys):
    assert main(["search", "--preset", "nasnt", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown preset 'nasnt'" in err
    assert all(n in err for n in NAMES)
    assert main(["presets", "nasnt"]) == 2
    assert "valid presets" in capsys.readouterr().err


def test_preset_and_config_file_together_are_an_error(tmp_path, capsys):
    cfg = tmp_path / "e.toml"
    cfg.write_text("seed = 1\n")
    assert main(["search", "--preset", "nasrl", "-c", str(cfg)]) == 2
    assert "--preset and -c/--config" in capsys.readouterr().err


def test_flags_override_a_preset():
    e = experiment_from_args(_args("--preset", "nasrl", "--trials", "3", "--epochs", "2",
                                   "--strategy-opt", "lr=0.01", "--seed", "4"))
    assert e.strategy.name == "reinforce" and e.strategy.options["lr"] == 0.01
    assert e.strategy.options["reward"] == {"kind": "accuracy", "power": 3}
    assert e.estimator.options["epochs"] == 2 and e.estimator.options["optimizer"] == "sgd"
    assert (e.budget.trials, e.budget.wall_time_s, e.seed) == (3, None, 4)
    assert e.name.endswith("-nasrl") and e.data.name == "digits"
    # another strategy or estimator does not inherit the preset's options
    other = experiment_from_args(_args("--preset", "nasrl", "--strategy", "random",
                                       "--estimator", "oneshot"))
    assert other.strategy.options == {} and other.estimator.options == {}
    assert other.space.name == "nasrl"
    mine = experiment_from_args(_args("--preset", "mnasnet", "--evaluator", "m.py:f",
                                      "--latency-target", "5"))
    assert mine.estimator.kind == "evaluator" and mine.estimator.options == {}
    assert mine.reward.kind == "mnasnet" and mine.reward.target == 5.0


def test_epochs_without_a_preset():
    e = experiment_from_args(_args("--epochs", "2"))
    assert e.estimator.options["epochs"] == 2
    with pytest.raises(Exception, match="--epochs sets the training or oneshot"):
        experiment_from_args(_args("--space", "nb201", "--estimator", "nb201", "--epochs", "2"))


def test_trials_and_epochs_scale_the_paper_settings():
    q = get_preset("metaqnn").experiment(trials=50)
    assert q.strategy.options["budget"] == 50 == q.budget.trials
    evo = get_preset("amoebanet")
    assert evo.experiment().strategy.options == {"population": 100, "sample": 25,
                                                 "dedup": False}
    small = evo.experiment(trials=40).strategy.options
    assert (small["population"], small["sample"]) == (20, 5)
    assert get_preset("pnas").experiment(trials=116).strategy.options["budget"] == 116
    darts = get_preset("darts").experiment(epochs=5)
    assert darts.strategy.options["epochs"] == 5 and darts.estimator.options["epochs"] == 60
    px = get_preset("proxylessnas")
    assert px.experiment().strategy.options["warmup"] == 40
    one = px.experiment(epochs=1).strategy.options
    assert (one["epochs"], one["warmup"]) == (1, 0)
    assert px.experiment(epochs=12).strategy.options["warmup"] == 4


def test_docs_table_is_the_presets_table():
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    m = re.search(r"<!-- presets table: begin[^>]*-->\n(.*?)<!-- presets table: end -->",
                  text, re.S)
    assert m, "docs/papers.md lost its generated table markers"
    assert m.group(1) == papers_table(), \
        "docs/papers.md is stale: paste the output of `nasir presets --markdown`"
    for p in all_presets():
        row = next(r for r in m.group(1).splitlines() if r.startswith(f"| `{p.name}` |"))
        assert row.rstrip(" |").split("| ")[-1].split(":")[0] == str(len(p.deviations))
    assert "benchmarks/paper_defaults.py" in text


EVALUATOR = '''
import math

from nasir.passes.analysis import analyze


def evaluate(trial):
    """A static stand-in for training: accuracy and latency from the graph's size."""
    info = analyze(trial.graph)
    return {"accuracy": 1.0 - 1.0 / (2.0 + math.log1p(info["params"])),
            "latency_ms": 0.01 + info["macs"] / 1e7}
'''


class _TableLUT:
    """Stands in for the TVM per-layer latency table (no compiling in tests): MACs."""

    constant_ms = 0.01

    def __init__(self, *args, **kwargs):
        pass

    def layer_sum(self, graph):
        from nasir.passes.analysis import analyze

        return analyze(graph)["macs"] / 1e7

    def predict(self, graph):
        return self.layer_sum(graph) + self.constant_ms


#: per preset, what shrinks its run to seconds (the budget stays the preset's own settings)
TINY = {
    "enas": ["--strategy-opt", "data_fraction=0.1"],
    # DARTS' second-order step on its 8-cell supernet is the costly part: 32 images (one
    # batch of 16 a half) instead of 108 (~35 % less time; same space, strategy, top_k)
    "darts": ["--strategy-opt", "data_fraction=0.03", "--strategy-opt", "batch_size=16",
              "--strategy-opt", "top_k=2"],
    "fbnet": ["--strategy-opt", "data_fraction=0.1", "--strategy-opt", "top_k=2"],
    "proxylessnas": ["--strategy-opt", "data_fraction=0.1", "--strategy-opt", "top_k=2"],
    "netadapt": ["--strategy-opt", "max_iters=1", "--strategy-opt", "pretrain_epochs=1",
                 "--strategy-opt", "long_term_epochs=0", "--space-opt", "width=0.25"],
}


def _tiny(name: str) -> list[str]:
    if name != "netadapt":
        return TINY.get(name, [])
    from nasir.spaces import get_space
    from nasir.strategies.oneshot.netadapt import NetAdaptSearch

    p = get_preset(name)
    sp = get_space(p.space, input_shape=(1, 8, 8), num_classes=10, width=0.25)
    s = NetAdaptSearch(sp, latency_fn=lambda g: 1.0)
    layers = list(s.layer_widths(sp.reference(next(iter(sp.references)))))[:2]
    return [*TINY[name], "--strategy-opt", f"layers={json.dumps(layers)}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_preset_runs_end_to_end(name, tmp_path, monkeypatch, capsys):
    """``nasir search --preset NAME --trials 2 --epochs 1`` with a static evaluator in place
    of training (and a MACs table in place of TVM's latency table): the preset's space,
    strategy and reward run for real, only the scoring is cheap."""
    import nasir.backends.tvm.lut as lut

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lut, "LatencyLUT", _TableLUT)
    (tmp_path / "static_eval.py").write_text(EVALUATOR)
    run = tmp_path / "run"
    # ENAS scores its children with its shared weights (its derived child too, here): its
    # smallest run is a child, a derivation child and the derived child
    n = 3 if name == "enas" else 2
    # NetAdapt's trials start from inherited weights: only the training estimator reads
    # them (1 epoch on digits here)
    scoring = ["--estimator-opt", "final=shared"] if name == "enas" else \
        ["--estimator-opt", "data_fraction=0.2"] if name == "netadapt" else \
        ["--evaluator", "static_eval.py:evaluate"]
    code = main(["search", "--preset", name, "--trials", str(n), "--epochs", "1",
                 *scoring, "--latency", "off",
                 "--executor", "inprocess", "--run-dir", str(run), "--no-progress",
                 "--no-report", *_tiny(name)])
    assert code == 0, capsys.readouterr().err
    store = RunStore.open(str(run))
    try:
        trials, exp = store.trials(), store.config
    finally:
        store.close()
    assert len(trials) == n and all(t["status"] == "done" for t in trials), trials
    assert exp["strategy"]["name"] == get_preset(name).strategy
    if name == "enas":  # the controller's child, then the derivation
        assert [t["metrics"]["role"] for t in trials] == ["child", "derive", "derived"]
    elif name in ("darts", "fbnet", "proxylessnas"):  # a search job, then 2 distinct children
        assert len({t["hash"] for t in trials}) == 2
    elif name == "netadapt":  # the start network, then a proposal: one layer narrower
        narrower = [k for k, v in trials[1]["assignment"].items()
                    if v < trials[0]["assignment"][k]]
        assert len(narrower) == 1 and trials[1]["assignment"].keys() == trials[0][
            "assignment"].keys()
    elif name in ONESHOT:  # one search, its derived architecture proposed again: cached
        assert trials[1].get("cached_from") == trials[0]["id"] or len(
            {t["hash"] for t in trials}) == 1
