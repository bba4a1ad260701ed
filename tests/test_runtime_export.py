"""The plain-PyTorch export reads like the IR: named modules, matching weights, a manifest map."""

from __future__ import annotations

import ast
import json
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.errors import NasirError
from nasir.runtime.export import backend_weights, export_trial, load_exported
from nasir.runtime.export_names import readable_names, scoped_instantiate
from nasir.runtime.store import RunStore
from nasir.spaces import get_space

SPACE = {"name": "tiny_mnasnet"}


def _run(folder: str, assignments: list[dict], seed: int = 3, **metrics) -> list[dict]:
    """A run store holding finished trials of ``assignments``, with random kept weights."""
    import torch

    from nasir.backends.torch import lower
    from nasir.passes.hashing import assignment_hash

    sp = get_space(SPACE["name"])
    st_ = RunStore.create(folder, {"space": SPACE, "seed": seed})
    os.makedirs(os.path.join(folder, "weights"))
    gen = torch.Generator().manual_seed(0)
    try:
        for k, a in enumerate(assignments):
            a = sp.check(a)
            h = assignment_hash(sp, a)
            tid = st_.add_trial(a.to_json(), h)
            st_.finish_trial(tid, "done", metrics={"accuracy": 0.5 + k / 10, **metrics},
                             reward=0.5 + k / 10)
            # every tensor distinct (BN statistics too), so a swapped weight shows in outputs
            sd = lower(sp.instantiate(a)).state_dict()
            kept = {n: torch.rand(v.shape, generator=gen) + 0.5 if n.endswith("running_var")
                    else v + 0.1 * torch.randn(v.shape, generator=gen) for n, v in sd.items()}
            torch.save(kept, os.path.join(folder, "weights", f"{h}.pt"))
        return st_.trials()
    finally:
        st_.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The reference 'small' member of tiny_mnasnet, exported as JSON and plain PyTorch."""
    root = tmp_path_factory.mktemp("export")
    sp = get_space(SPACE["name"])
    run = str(root / "run")
    (trial,) = _run(run, [dict(sp.reference("small"))])
    out = str(root / "out")
    man = export_trial(run, trial, out, formats=("json", "torch"))
    with open(os.path.join(out, "model.py"), encoding="utf-8") as fh:
        src = fh.read()
    return {"run": run, "trial": trial, "out": out, "man": man, "src": src, "space": sp}


def _init_names(src: str) -> list[str]:
    """The attribute names ``Net.__init__`` assigns as ``self.NAME = ...``."""
    tree = ast.parse(src)
    net = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net")
    init = next(f for f in net.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    return [t.attr for s in init.body if isinstance(s, ast.Assign) for t in s.targets
            if isinstance(t, ast.Attribute)]


def test_modules_are_named_after_the_ir_not_numbers(exported):
    src = exported["src"]
    assert 'getattr(self, "' not in src and "add_module(" not in src
    names = _init_names(src)
    mod = load_exported(os.path.join(exported["out"], "model.py"))
    children = [n for n, _ in mod.Net().named_children()]
    assert names == children and len(children) == len(set(children)) > 10
    for n in children:
        assert n.isidentifier() and not re.fullmatch(r"_*\d+", n), n
    assert "_layer" in " ".join(children)  # placed in its block / layer, not only numbered
    for want in ("stem_conv", "stem_bn", "b1_layer1_dw_conv", "b1_layer1_dw_bn",
                 "b2_layer1_conv1", "b2_layer1_bn1", "b2_layer1_dw_conv", "b2_layer1_conv2",
                 "b3_layer2_conv1", "head_conv", "head_dropout", "head_linear"):
        assert want in children, (want, children)
        assert f"self.{want}(" in src  # called by name in the forward
    # the forward's variables are readable too: no backend numbers such as relu_14
    forward = src[src.index("    def forward"):]
    assert not re.search(r"\b[a-z_0-9]+_\d\d+\b", forward), forward
    assert "stem_relu = torch.nn.functional.relu(stem_bn)" in forward


def test_weights_load_strictly_and_match_the_lowered_module(exported):
    import torch

    from nasir.backends.torch import lower
    from nasir.runtime.worker import trial_seed

    out, trial, sp = exported["out"], exported["trial"], exported["space"]
    assert exported["man"]["weights"].startswith("trained")
    net = load_exported(os.path.join(out, "model.py")).Net()
    sd = torch.load(os.path.join(out, "weights.pt"), weights_only=True)
    assert all(not re.match(r"\d", k) for k in sd)
    net.load_state_dict(sd, strict=True)
    net.eval()
    ref = lower(sp.instantiate(trial["assignment"]), seed=trial_seed(3, trial["hash"]))
    kept = torch.load(os.path.join(exported["run"], "weights", f"{trial['hash']}.pt"),
                      weights_only=True)
    ref.load_state_dict(kept, strict=True)
    ref.eval()
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((4, 1, 8, 8)).astype("f4"))
    with torch.no_grad():
        want, got = ref(x), net(x)
    assert float(want.abs().max()) > 0
    assert float((got - want).abs().max()) <= 1e-6
    # the renamed tensors are the lowering's, key for key, and load back into it
    back = backend_weights(sd, exported["man"]["modules"])
    assert sorted(back) == sorted(kept)
    for key, value in back.items():
        assert torch.equal(value, kept[key]), key
    fresh = lower(sp.instantiate(trial["assignment"]), seed=1)
    fresh.load_state_dict(back, strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
    with pytest.raises(NasirError, match="no module of the manifest"):
        backend_weights({"conv9.weight": sd[next(iter(sd))]}, exported["man"]["modules"])


def test_manifest_maps_every_parameterised_node_to_its_module(exported):
    from nasir.backends.torch.lowering import prepare

    man, sp, trial = exported["man"], exported["space"], exported["trial"]
    with open(os.path.join(exported["out"], "manifest.json"), encoding="utf-8") as fh:
        assert json.load(fh)["modules"] == man["modules"]
    g = sp.instantiate(trial["assignment"])
    expanded = prepare(g)
    params = {n.name for n in expanded.nodes()
              if n.op.name in ("conv2d", "depthwise_conv2d", "batch_norm", "linear")}
    assert params and params <= set(man["modules"])
    net = load_exported(os.path.join(exported["out"], "model.py")).Net()
    assert sorted(v["module"] for v in man["modules"].values()) == \
        sorted(n for n, _ in net.named_children())
    arch = {n.name: n.op.name for n in g.nodes()}
    for node, entry in man["modules"].items():
        assert expanded.node(node).op.name == entry["op"]
        assert arch[entry["arch_node"]] == entry["arch_op"]  # a node of arch.json's graph
    dw = next(v for v in man["modules"].values() if v["module"] == "b2_layer1_dw_conv")
    assert dw["arch_op"] == "mbconv" and "mnasnet.py:" in dw["loc"]
    assert dw["scope"] == [{"decision": "b2_layers", "layer": 1},
                           {"decision": "b2_op", "option": "mbconv3"}]


def test_names_are_stable_for_an_architecture(exported, tmp_path):
    again = str(tmp_path / "again")
    export_trial(exported["run"], exported["trial"], again, formats=("json", "torch"))
    with open(os.path.join(again, "model.py"), encoding="utf-8") as fh:
        assert fh.read() == exported["src"]


@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_members_get_unique_identifiers_for_every_lowered_node(seed):
    from nasir.backends.torch.lowering import prepare
    from nasir.passes.sampling import sample

    sp = get_space(SPACE["name"])
    (a,) = sample(sp, np.random.default_rng(seed))
    g, scopes = scoped_instantiate(sp, a)
    names = readable_names(g, scopes)
    lowered = {n.name for n in prepare(g).nodes() if n.op.name not in ("input", "identity")}
    assert set(names) == lowered
    assert len(set(names.values())) == len(names)
    for n in names.values():
        assert n.isidentifier() and not re.fullmatch(r"_*\d+", n)
    assert sum(v.startswith("stem_") for v in names.values()) == 3


def test_cell_space_names_number_the_cells(tmp_path):
    sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
    g, scopes = scoped_instantiate(sp, sp.reference("resnet"))
    names = set(readable_names(g, scopes).values())
    assert {"stem_conv", "stem_bn", "edge_0_1_1_relu", "edge_0_1_1_conv", "edge_0_1_3_bn",
            "head_linear"} <= names, sorted(names)


@pytest.mark.slow
def test_onnx_and_tvm_exports_still_pass_their_checks(tmp_path):
    sp = get_space(SPACE["name"])
    run = str(tmp_path / "run")
    (trial,) = _run(run, [dict(sp.reference("large"))], latency_path="onnxruntime",
                    latency_paths_ms={"tvm": 0.3, "onnxruntime": 0.2})
    out = str(tmp_path / "out")
    man = export_trial(run, trial, out)
    assert man["torch_max_abs_diff"] <= 1e-6
    assert man["onnx_max_abs_diff"] < 1e-4
    # the trial's latency was ONNX Runtime's: the manifest points at the file it timed
    assert man["latency_path"] == {"path": "onnxruntime", "file": "model.onnx"}
    if "tvm" in man:  # TVM not installed here
        pytest.skip(man["tvm"])
    assert man["tvm_max_abs_diff"] < 1e-3 and os.path.exists(os.path.join(out, man["files_tvm"]))
