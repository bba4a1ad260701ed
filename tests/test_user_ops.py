"""User ops: a torch module factory + a shape rule become a registered, lowerable op."""

from __future__ import annotations

import importlib.util
import inspect
import json
import pathlib
import pickle

import numpy as np
import pytest
import torch

from nasir.backends.torch import load_weights
from nasir.backends.torch import lower as torch_lower
from nasir.backends.torch.memory import predict_training_memory
from nasir.backends.tvm import compile_graph, param_specs, prepare, random_weights
from nasir.backends.tvm import lower as tvm_lower
from nasir.dsl import SpaceBuilder
from nasir.errors import BackendError, NasirError, SpecError, VerifyError
from nasir.ops import (
    OPS,
    Conv2dOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    UserOp,
    ZeroOp,
    user_op,
)
from nasir.passes import verify
from nasir.passes.analysis import analyze
from nasir.passes.canonicalize import canonicalize
from nasir.passes.hashing import graph_hash
from nasir.space import Space
from nasir.space_text import parse_space
from nasir.text import parse_graph

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = {"kind": "llvm", "opt-level": 0}

TGelu = user_op("t_gelu", module=lambda t: torch.nn.GELU(), shape=lambda t: t.shape)
TNorm = user_op("t_layer_norm",
                module=lambda t, eps: torch.nn.LayerNorm(list(t.shape), eps=eps),
                shape=lambda t, eps: t.shape, macs=lambda i, o, eps: 7, attrs={"eps": 1e-5})
TPoint = user_op("t_pointwise",  # a 1×1 conv as a user op: MACs from the flop counter
                 module=lambda t, width: torch.nn.Conv2d(t.shape[0], width, 1, bias=False),
                 shape=lambda t, width: (width, *t.shape[1:]), attrs={"width": 8})


def _net(*ops, shape=(3, 8, 8)):
    s = SpaceBuilder("u", input_shape=shape)
    x = s.op(Conv2dOp(out_channels=4), s.input)
    for op in ops:
        x = s.op(op, x)
    x = s.op(LinearOp(out_features=5), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x).instantiate({})


def _user_node(m, g, name):
    node = next(n for n in prepare(g).nodes() if n.op.name == name)
    return node, m.get_submodule(node.name)


def test_a_user_op_is_a_registered_typed_frozen_op():
    assert OPS["t_gelu"] is TGelu and issubclass(TNorm, UserOp)
    op = TNorm(eps=1e-3)
    with pytest.raises(AttributeError):
        op.eps = 1.0
    with pytest.raises(SpecError, match="eps must be float"):
        TNorm(eps="small")
    with pytest.raises(SpecError, match="already taken by a built-in op"):
        user_op("conv2d", module=lambda t: torch.nn.GELU(), shape=lambda t: t.shape)
    # declaring the same name again from the same file (a re-import) replaces the op
    again = user_op("t_gelu", module=lambda t: torch.nn.GELU(), shape=lambda t: t.shape)
    assert OPS["t_gelu"] is again
    OPS["t_gelu"] = TGelu
    assert pickle.loads(pickle.dumps(op)) == op


def test_torch_lowering_calls_the_users_module_by_node_name():
    g = _net(TNorm(), TGelu())
    m = torch_lower(g, seed=0).eval()
    node, sub = _user_node(m, g, "t_layer_norm")
    assert isinstance(sub, torch.nn.LayerNorm)
    assert {f"{node.name}.weight", f"{node.name}.bias"} <= set(m.state_dict())
    with torch.no_grad():
        sub.weight.uniform_(0.5, 1.5)
        sub.bias.normal_()
        x = torch.randn(2, 3, 8, 8)
        conv = m.get_submodule(next(n.name for n in prepare(g).nodes()
                                    if n.op.name == "conv2d"))
        by_hand = torch.nn.LayerNorm([4, 8, 8])
        by_hand.load_state_dict(sub.state_dict())
        h = torch.nn.functional.gelu(by_hand(conv(x)))
        head = m.get_submodule(next(n.name for n in prepare(g).nodes()
                                    if n.op.name == "linear"))
        torch.testing.assert_close(m(x), head(h.mean((2, 3))))
    # the user's own initialisation, seeded: same seed same weights, other seed others
    a = torch_lower(_net(TPoint()), seed=1).state_dict()
    b = torch_lower(_net(TPoint()), seed=1).state_dict()
    c = torch_lower(_net(TPoint()), seed=2).state_dict()
    key = next(k for k in a if a[k].shape == (8, 4, 1, 1))
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_params_and_macs_from_the_module_and_the_rules():
    base = analyze(_net())
    norm = analyze(_net(TNorm()))
    assert norm["params"] - base["params"] == 2 * 4 * 8 * 8
    assert norm["macs"] - base["macs"] == 7  # the declared rule
    point = analyze(_net(TPoint(width=8)))
    builtin = analyze(_net(Conv2dOp(out_channels=8, kernel=1)))
    assert point["params"] == builtin["params"]
    assert point["macs"] == builtin["macs"]  # flop counter / 2 on a batch of one
    assert analyze(_net(TGelu()))["macs"] == base["macs"]


def test_text_and_json_forms_round_trip_with_refs():
    s = SpaceBuilder("us", input_shape=(3, 8, 8))
    x = s.op(Conv2dOp(out_channels=4), s.input)
    x = s.op(TPoint(width=s.value("width", [4, 8])), x)
    x = s.op(TNorm(eps=1e-3), x)
    sp = s.build(s.op(FlattenOp(), x))
    text = sp.text()
    assert "t_pointwise(%1) {width=$width}" in text and "t_layer_norm(%2) {eps=0.001}" in text
    assert parse_space(text).text() == text
    assert Space.from_json(json.loads(json.dumps(sp.to_json()))).text() == text
    g = sp.instantiate({"width": 8})
    verify(g)
    assert parse_graph(g.text()).text() == g.text()
    assert g.output.type.shape == (8 * 8 * 8,)
    with pytest.raises(NasirError, match="user op is known once the module"):
        parse_graph(g.text().replace("t_layer_norm", "t_not_declared"))


def test_hash_includes_name_and_attributes_and_canonicalize_keeps_user_ops():
    assert graph_hash(_net(TNorm(eps=1e-5))) == graph_hash(_net(TNorm(eps=1e-5)))
    assert graph_hash(_net(TNorm(eps=1e-5))) != graph_hash(_net(TNorm(eps=1e-3)))
    assert graph_hash(_net(TGelu())) != graph_hash(_net(TNorm()))
    g = parse_graph("""graph @z {
  %x = input() {shape=[4, 8, 8]}
  %1 = zero(%x)
  %2 = t_gelu(%1)
  return %2
}""")
    verify(g)
    canonicalize(g)
    assert [n.op.name for n in g.nodes()] == ["input", "zero", "t_gelu"]
    assert isinstance(g.nodes()[1].op, ZeroOp)


def test_memory_model_counts_the_users_weights():
    est = predict_training_memory(_net(TNorm()), batch_size=4)
    base = predict_training_memory(_net(), batch_size=4)
    assert est.weights - base.weights == 4 * 2 * 4 * 8 * 8
    assert est.activations > base.activations


def test_a_bad_shape_rule_points_at_the_users_lines():
    Bad = user_op("t_bad_shape", module=lambda t: torch.nn.GELU(),
                  shape=lambda t: (t.shape[0], t.shape[1] - 9))
    rule_line = inspect.currentframe().f_lineno - 1
    s = SpaceBuilder("bad", input_shape=(3, 8, 8))
    x = s.op(Bad(), s.input); use_line = inspect.currentframe().f_lineno  # noqa: E702
    g = s.build(x).instantiate({})
    with pytest.raises(VerifyError) as e:
        verify(g)
    assert f"test_user_ops.py:{rule_line}" in e.value.message
    assert "returned (3, -1)" in e.value.message and "t_bad_shape" in e.value.where
    assert str(e.value.loc).endswith(f"test_user_ops.py:{use_line}")
    Raises = user_op("t_raising_shape", module=lambda t: torch.nn.GELU(),
                     shape=lambda t: t.shape[5])
    s = SpaceBuilder("bad", input_shape=(3, 8, 8))
    g = s.build(s.op(Raises(), s.input)).instantiate({})
    with pytest.raises(VerifyError, match="raised IndexError"):
        verify(g)


def test_a_module_that_breaks_its_shape_rule_is_a_backend_error():
    Lying = user_op("t_lying", module=lambda t: torch.nn.AvgPool2d(2),
                    shape=lambda t: t.shape)
    g = _net(Lying())
    with pytest.raises(BackendError, match=r"returns per-sample shape \[4, 4, 4\]") as e:
        torch_lower(g)
    assert "t_lying" in e.value.where
    with pytest.raises(NasirError, match="shape rule"):
        analyze(g)


def test_tvm_compiled_user_ops_match_the_torch_lowering():
    g = _net(TNorm(), TGelu())
    pg = prepare(g)
    w = random_weights(pg, seed=4)
    by_name = {n.name: n for n in pg.nodes()}
    for k in w:  # LayerNorm's own init is γ=1, β=0: perturb it so it matters
        if by_name[k.split(".")[0]].op.name == "t_layer_norm":
            w[k] = w[k] + np.random.default_rng(0).normal(0, 0.5, w[k].shape).astype(np.float32)
    specs = param_specs(pg)
    norm = next(n.name for n in pg.nodes() if n.op.name == "t_layer_norm")
    assert specs[f"{norm}.weight"] == (4, 8, 8)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = compile_graph(g, FAST, batch=2, weights=w).run([x])[0]
    m = torch_lower(g).eval()
    load_weights(m, w)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(out - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    # weights as parameters: the user module's tensors are parameters like the others
    mod = tvm_lower(g, w, batch=2, bind_params=False)
    names = [str(p) for p in mod["main"].params]
    assert f"p_{norm}_weight" in names and len(mod.get_global_vars()) == 1


def _example():
    path = ROOT / "docs" / "examples" / "user_op_space.py"
    spec = importlib.util.spec_from_file_location("user_op_space_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_example_space_instantiates_trains_and_compiles():
    sp = _example().build(input_shape=(1, 8, 8), num_classes=10)
    assert sp.size == 20 and parse_space(sp.text()).text() == sp.text()
    g = sp.instantiate(sp.reference("attention"))
    verify(g)
    m = torch_lower(g, seed=0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert any("in_proj_weight" in k for k in changed)  # the attention module trained
    w = {k: v.detach().numpy() for k, v in m.eval().state_dict().items()}
    xs = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    out = compile_graph(g, FAST, batch=1, weights=w).run([xs])[0]
    with torch.no_grad():
        ref = m(torch.from_numpy(xs)).numpy()
    assert np.max(np.abs(out - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
