"""Paper modes of the NASNet, FBNet, MnasNet and MetaQNN spaces (issue 21, item 3), and PPO
runs on them through the runner.

Where the figures come from:
- NASNet: Zoph et al., CVPR 2018, Sec. 3: a block is 5 predictions (two hidden states, two
  ops, a combine step: add or concat), B = 5 blocks, "2 × 5B predictions" for a normal and
  a reduction cell, 13 ops; TF-slim ``nasnet_utils.py`` (add only, released cell outputs).
- FBNet: Wu et al., CVPR 2019, Table 1 (macro network, 1×1 head conv of 1984), Table 2
  (the nine candidate blocks), Sec. 3.2 (22 searchable layers, 9^22 architectures).
- MnasNet: Tan et al., CVPR 2019, Sec. 4.1 / Fig. 4 (SkipOp: pooling, identity residual or
  no skip; 7 blocks with ConvOp, KernelSize, SERatio, SkipOp, filters, layers).
- MetaQNN: Baker et al., ICLR 2017, Table 1 (conv 64/128/256/512 filters, 1/3/5 kernels;
  pools (5,3), (3,2), (2,2); FC 512/256/128, at most 2; bins (∞,8], (8,4], (4,1]; depth
  < 12), Sec. 4 (FC only from the two small bins, non-increasing widths, no pool after a
  pool, GAP/softmax termination), Table A2 (the CIFAR-10 model); ``bowenbaker/metaqnn``
  ``state_enumerator.py`` / ``state_space_parameters.py`` (kernel < bin, Caffe pooling).
"""

import itertools
import json
import math

import numpy as np
import pytest

from nasir.ops import MBConvOp
from nasir.passes import analyze, expand_composites, verify
from nasir.passes.hashing import assignment_hash
from nasir.passes.sampling import UniformSampler
from nasir.space import Assignment
from nasir.space_text import parse_space
from nasir.spaces import get_reference, get_space, reference_names
from nasir.spaces.metaqnn import caffe_pool_size, rep_bin
from nasir.types import TensorType

PAPER = {"nasnet": {"input_shape": (1, 8, 8)}, "fbnet": {"input_shape": (1, 8, 8)},
         "mnasnet": {"input_shape": (1, 8, 8)}, "metaqnn": {"input_shape": (3, 8, 8)}}


def paper_space(name: str, **opts):
    return get_space(name, paper=True, num_classes=10, **{**PAPER[name], **opts})


def counts(space, a) -> tuple[int, int]:
    info = analyze(space.instantiate(a))
    return info["params"], info["macs"]


# -- every paper mode: build, sample, instantiate, hash, forms -------------------------------
@pytest.mark.parametrize("name", list(PAPER))
def test_paper_mode_samples_instantiate_hash_and_roundtrip(name):
    sp = paper_space(name)
    assert sp.meta["mode"] == "paper"
    t = sp.text()
    again = parse_space(t)
    assert again.text() == t
    for ref, a in sp.references.items():
        assert again.reference(ref) == a
        verify(sp.instantiate(a))
    hashes = set()
    for a in UniformSampler(sp).sample(np.random.default_rng(0), 6):
        g = sp.instantiate(a)
        verify(g)
        assert str(g.output.type) == "f32[10]"
        assert Assignment.parse(a.text()) == a
        assert sp.check(json.loads(json.dumps(a.to_json()))) == a
        h = assignment_hash(sp, a)
        assert h == assignment_hash(again, a)
        hashes.add(h)
    assert len(hashes) > 1


def test_default_builds_are_unchanged():
    # pinned figures of the default spaces (tests/test_spaces_library.py, tests/test_ir.py)
    nas = get_space("nasnet")
    assert len(nas.decisions) == 42 and "normal_keep" in nas._by_label
    assert counts(nas, nas.reference("nasnet_a"))[0] == 5_289_978
    assert get_space("nasnet", paper=False).text() == nas.text()
    fb = get_space("fbnet")
    assert len(fb.decisions) == 23 and fb.decision("head_width").options == (1504, 1984)
    assert counts(fb, fb.reference("fbnet_b"))[0] == 4_801_368
    mn = get_space("mnasnet")
    assert mn.decision("b2_skip").options == (False, True)
    assert counts(mn, mn.reference("mnasnet_b1"))[0] == 4_383_312
    mq = get_space("metaqnn", input_shape=(1, 8, 8), num_classes=10)
    assert len(mq.decisions) == 27
    assert counts(*get_reference("metaqnn", "metaqnn_cifar10"))[0] == 11_368_458
    assert reference_names("metaqnn") == ["metaqnn_cifar10"]


# -- NASNet ---------------------------------------------------------------------------------
def test_nasnet_paper_decisions_match_the_paper():
    sp = paper_space("nasnet")
    assert len(sp.decisions) == 2 * 5 * 5  # 2 × 5B predictions, B = 5
    assert not any(d.label.endswith("_keep") for d in sp.decisions)
    for kind in ("normal", "reduce"):
        for b in range(5):
            labels = [f"{kind}_b{b}_{x}" for x in ("in_a", "in_b", "op_a", "op_b", "combine")]
            ds = [sp.decision(lab) for lab in labels]
            assert [d.size for d in ds] == [b + 2, b + 2, 13, 13, 2]
            assert ds[4].options == ("add", "concat")
    # the controller's order within a block: states, ops, combine (paper steps 1-5)
    first = [d.label for d in sp.decisions[:5]]
    assert first == ["reduce_b0_in_a", "reduce_b0_in_b", "reduce_b0_op_a", "reduce_b0_op_b",
                     "reduce_b0_combine"]
    assert sp.size == ((2 * 3 * 4 * 5 * 6) ** 2 * 13 ** 10 * 2 ** 5) ** 2


def test_nasnet_paper_references_are_the_released_cells_under_the_papers_rule():
    # NASNet-A and AmoebaNet-A only add, but their released outputs also concatenate used
    # states (the default space's keep), so the paper's space holds them under its rule
    for ref, released, opts, exact in (
            ("nasnet_a", 5_289_978, {}, (4_772_516, 518_307_552)),
            ("amoebanet_a", 5_088_162, {"filters": 50}, (4_343_862, 485_838_596))):
        sp, a = get_reference("nasnet", f"{ref}_paper_rule")
        assert sp.meta["mode"] == "paper" and sp.meta["macro"]["filters"] == opts.get("filters", 44)
        assert set(v for k, v in a.items() if k.endswith("combine")) == {"add"}
        assert counts(sp, a) == exact
        default = get_space("nasnet", **opts)
        keep_none = default.reference(ref).replace(normal_keep=(), reduce_keep=())
        assert counts(default, keep_none) == exact  # the default space's keep=[] rule
        assert counts(default, default.reference(ref))[0] == released
    assert "nasnet_a_paper_rule" in reference_names("nasnet")


def test_nasnet_concat_doubles_a_state_and_its_readers_project_back():
    sp = get_space("nasnet", paper=True, input_shape=(3, 32, 32), num_classes=10,
                   cells_per_stage=1, filters=8, stem="cifar")
    a = sp.reference("nasnet_a_paper_rule").replace(
        normal_b0_combine="concat", normal_b1_in_a=2, normal_b1_op_a="identity")
    g = sp.instantiate(a)
    verify(g)
    concats = [n for n in g.nodes() if n.op.name == "concat" and len(n.inputs) == 2
               and all(i.op.name == "cell_edge" for i in n.inputs)]
    assert concats and all(n.type.shape[0] == 2 * n.inputs[0].type.shape[0] for n in concats)
    readers = [u for n in concats for u in g.users(n) if u.op.name == "cell_edge"]
    assert readers and all(u.type.shape[0] == u.op.out_channels for u in readers)
    # every block reads state 2 or later, so the concatenated block 0 is not in the output
    assert counts(sp, a) != counts(sp, sp.reference("nasnet_a_paper_rule"))


# -- FBNet ----------------------------------------------------------------------------------
def test_fbnet_paper_has_nine_candidates_and_a_fixed_head():
    sp = paper_space("fbnet")
    assert len(sp.decisions) == 22
    nine = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6",
            "skip")
    assert all(d.options == nine for d in sp.decisions)
    assert sp.size == 9 ** 22
    g = sp.instantiate(sp.reference("fbnet_b"))
    assert any(n.op.name == "conv_bn_act" and n.op.out_channels == 1984 for n in g.nodes())
    assert sorted(sp.references) == ["fbnet_b", "fbnet_c"]  # FBNet-A's released head: 1504
    assert sorted(paper_space("fbnet", head_width=1504).references) == ["fbnet_a"]


def test_fbnet_paper_references_are_exact():
    default = get_space("fbnet")
    for head, ref in ((1984, "fbnet_b"), (1984, "fbnet_c"), (1504, "fbnet_a")):
        sp = get_space("fbnet", paper=True, head_width=head)
        assert counts(sp, sp.reference(ref)) == counts(default, default.reference(ref))
    sp = get_space("fbnet", paper=True)
    assert counts(sp, sp.reference("fbnet_b")) == (4_801_368, 291_004_424)


# -- MnasNet --------------------------------------------------------------------------------
def test_mnasnet_paper_skip_has_three_options_and_references_stay_exact():
    sp = get_space("mnasnet", paper=True)
    assert len(sp.decisions) == 7 * 6
    assert all(sp.decision(f"b{b}_skip").options == ("none", "identity", "pool")
               for b in range(1, 8))
    default = get_space("mnasnet")
    for ref in ("mnasnet_a1", "mnasnet_b1"):
        assert counts(sp, sp.reference(ref)) == counts(default, default.reference(ref))
    assert counts(sp, sp.reference("mnasnet_b1"))[0] == 4_383_312  # torchvision mnasnet1_0
    a1 = sp.reference("mnasnet_a1")
    pooled = a1.replace(**{f"b{b}_skip": "pool" for b in range(1, 8)})
    assert counts(sp, pooled)[0] > counts(sp, a1)[0]


def test_pooling_skip_pools_and_projects_where_identity_cannot():
    t = TensorType((16, 8, 8))
    for op, cost in ((MBConvOp(out_channels=24, kernel=3, stride=2, expand=6, skip="pool"),
                      16 * 24 + 2 * 24),
                     (MBConvOp(out_channels=16, kernel=3, stride=2, expand=6, skip="pool"), 0),
                     (MBConvOp(out_channels=24, kernel=3, stride=1, expand=6, skip="pool"),
                      16 * 24 + 2 * 24)):
        base = MBConvOp(**{**op.attrs(), "skip": "none"})
        out = op.infer((t,))
        assert out == base.infer((t,))
        assert op.params((t,), out) - base.params((t,), out) == cost
    # at stride 1 with equal widths every skip but "none" is the identity residual
    same = [MBConvOp(out_channels=16, expand=6, skip=s) for s in (True, "identity", "pool")]
    assert len({op.params((t,), t) for op in same}) == 1
    from nasir.graph import Graph
    from nasir.ops import InputOp

    g = Graph("blk")
    x = g.add(InputOp(shape=(16, 8, 8)))
    g.set_output(g.add(MBConvOp(out_channels=24, stride=2, expand=3, skip="pool"), [x]))
    expand_composites(g)
    names = [n.op.name for n in g.nodes()]
    assert "avg_pool2d" in names and names[-1] == "add"
    pool = next(n for n in g.nodes() if n.op.name == "avg_pool2d")
    assert pool.inputs[0].op.name == "input" and not pool.op.count_include_pad


# -- MetaQNN --------------------------------------------------------------------------------
def test_metaqnn_paper_domains_follow_table_1():
    sp = get_space("metaqnn", paper=True)  # CIFAR-10, 32×32
    assert sp.decision("u0_filters").options == (64, 128, 256, 512)
    assert sp.decision("u0_kernel").options == (1, 3, 5)
    assert sp.decision("u0_pool").options == ("none", "p5s3", "p3s2", "p2s2")
    assert sp.decision("u3_r4_kernel").options == (1, 3)  # kernels smaller than the bin
    assert sp.decision("u3_r4_pool").options == ("none", "p3s2", "p2s2")
    assert sp.decision("u1_next").options == ("conv", "gap", "sm")  # no FC from >= 8×8
    assert sp.decision("u1_r4_next").options == ("conv", "fc", "gap", "sm")
    assert sp.decision("u1_r1_next").options == ("fc", "gap", "sm")  # no conv below 4×4
    widths = sp.decision("fc_layers").options
    assert len(widths) == 3 + 6 and all(list(w) == sorted(w, reverse=True) for w in widths)
    assert max(len(w) for w in widths) == 2
    assert [rep_bin(n) for n in (8, 7, 4, 3)] == [8, 4, 4, 1]
    # every decision comes after those that decide whether it is active
    labels = [d.label for d in sp.decisions]
    assert labels.index("u1_pool") < labels.index("u2_r4_kernel") < labels.index("fc_layers")


def _metaqnn_layers(g):
    """(layer, attrs, input size) of an instantiated MetaQNN graph, in order."""
    verify(g)  # infers the types
    out = []
    for n in g.nodes():
        name = n.op.name
        if name in ("conv_bn_act", "max_pool2d", "global_avg_pool", "fc_stack", "linear"):
            src = n.inputs[0]
            while src.op.name == "flatten":
                src = src.inputs[0]
            size = src.type.shape[-1] if len(src.type.shape) == 3 else None
            out.append((name, n.op, size))
    return out


def check_metaqnn_rules(g, units=6, limit=12):
    """The paper's restrictions on one network (Sec. 4, Table 1, the released enumerator)."""
    layers = _metaqnn_layers(g)
    assert layers[0][0] == "conv_bn_act" and layers[-1][0] == "linear"
    body = layers[:-1]
    for prev, kind in itertools.pairwise(k for k, _, _ in body):
        if kind == "max_pool2d":
            assert prev == "conv_bn_act"  # never a pool after a pool
        if kind in ("conv_bn_act", "global_avg_pool", "fc_stack"):
            assert prev in ("conv_bn_act", "max_pool2d")
    n_fc = 0
    for kind, op, n in body:
        if kind == "conv_bn_act":
            assert op.kernel < rep_bin(n)
        elif kind == "max_pool2d":
            assert op.kernel < rep_bin(n) and op.padding == 0 and op.ceil_mode
        elif kind == "fc_stack":
            assert n < 8 and list(op.widths) == sorted(op.widths, reverse=True)
            n_fc = len(op.widths)
    assert n_fc <= 2
    assert sum(k == "conv_bn_act" for k, _, _ in body) <= units
    assert sum(k in ("conv_bn_act", "max_pool2d") for k, _, _ in body) + n_fc <= limit


@pytest.mark.parametrize("size", [8, 16, 32])
def test_metaqnn_paper_networks_obey_the_papers_rules(size):
    sp = get_space("metaqnn", paper=True, input_shape=(3, size, size))
    kinds = set()
    for a in UniformSampler(sp).sample(np.random.default_rng(size), 60):
        g = sp.instantiate(a)
        verify(g)
        check_metaqnn_rules(g)
        kinds.update(k for k, _, _ in _metaqnn_layers(g))
    assert {"max_pool2d", "global_avg_pool"} <= kinds
    assert "fc_stack" in kinds or size == 32  # FC needs < 8×8, i.e. two pools from 32×32


def test_metaqnn_paper_reference_is_table_a2_with_caffe_pools():
    sp, a = get_reference("metaqnn", "metaqnn_cifar10", paper=True)
    g = sp.instantiate(a)
    check_metaqnn_rules(g)
    layers = [(k, getattr(op, "out_channels", None), op.kernel if hasattr(op, "kernel") else None)
              for k, op, _ in _metaqnn_layers(g)]
    assert layers == [("conv_bn_act", 512, 5), ("conv_bn_act", 256, 3), ("conv_bn_act", 256, 5),
                      ("conv_bn_act", 256, 3), ("max_pool2d", None, 5), ("conv_bn_act", 512, 3),
                      ("conv_bn_act", 512, 5), ("max_pool2d", None, 2), ("linear", None, None)]
    assert caffe_pool_size(caffe_pool_size(32, 5, 3), 2, 2) == 5
    params = counts(sp, a)[0]
    assert params == 11_312_138  # 5×5×512 into the softmax, as Caffe's unpadded pools give
    assert abs(params - 11.26e6) / 11.26e6 < 0.005  # paper Table A2: 11.26M
    assert not get_space("metaqnn", paper=True, input_shape=(3, 16, 16)).references


def test_metaqnn_strategy_walks_the_paper_space():
    from nasir.strategies import make_strategy

    sp = get_space("metaqnn", paper=True, input_shape=(3, 16, 16))
    s = make_strategy("metaqnn", sp, seed=0, budget=12)
    for i in range(12):
        a = s.propose(1)[0]
        check_metaqnn_rules(sp.instantiate(a))
        s.feedback(a, {"accuracy": 0.5 + 0.01 * i})


# -- PPO through the runner on the paper spaces ---------------------------------------------
OBJECTIVES = '''
import math
from nasir.passes import analyze


def nasnet(trial):
    info = analyze(trial.graph)
    return {"accuracy": 1.0 - math.exp(-info["params"] / 60000.0),
            "params": float(info["params"]), "macs": float(info["macs"])}


def mnasnet(trial):
    info = analyze(trial.graph)
    return {"accuracy": 1.0 - math.exp(-info["params"] / 2e6),
            "params": float(info["params"]), "macs": float(info["macs"])}
'''


def _learns(rewards: list[float], k: int = 10) -> float:
    return float(np.mean(rewards[-k:]) - np.mean(rewards[:k]))


def test_ppo_searches_the_nasnet_paper_space_end_to_end(tmp_path):
    # static analysis as the estimator: a synthetic accuracy that grows with the params
    from nasir.runtime.optimize import optimize

    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    r = optimize("nasnet", str(tmp_path / "objectives.py") + ":nasnet", trials=40,
                 strategy="ppo", strategy_options={"batch": 5, "lr": 0.05},
                 space_options={"paper": True, "input_shape": [3, 16, 16], "num_classes": 10,
                                "cells_per_stage": 1, "filters": 8, "stem": "cifar"},
                 objectives="accuracy:max", run=str(tmp_path / "run"), progress=False, seed=1)
    trials = r.trials()
    assert r.counts["done"] == 40
    combines = {v for t in trials for k, v in t["assignment"].items() if k.endswith("combine")}
    assert combines == {"add", "concat"}
    # the learned policy proposes better cells than the one it started from
    assert _learns([t["metrics"]["accuracy"] for t in trials]) > 0.03


def test_ppo_with_the_mnasnet_reward_searches_the_mnasnet_paper_space(tmp_path):
    # MnasNet's search: PPO on ACC·(LAT/T)^-0.07 (soft), MACs as the latency proxy
    from nasir.runtime.optimize import optimize
    from nasir.strategies.rewards import make_reward

    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    spec = {"kind": "mnasnet", "metric": "macs", "target": 6e6, "mode": "soft"}
    r = optimize("mnasnet", str(tmp_path / "objectives.py") + ":mnasnet", trials=40,
                 strategy="ppo", strategy_options={"batch": 5, "lr": 0.05, "reward": spec},
                 space_options={"paper": True, "input_shape": [3, 32, 32], "num_classes": 10},
                 objectives="accuracy:max", run=str(tmp_path / "run"), progress=False, seed=1)
    trials = r.trials()
    assert r.counts["done"] == 40
    reward = make_reward(spec)
    rewards = [reward(t["metrics"]) for t in trials]
    assert all(math.isfinite(x) and x > 0 for x in rewards)
    skips = {v for t in trials for k, v in t["assignment"].items() if k.endswith("_skip")}
    assert skips == {"none", "identity", "pool"}
    assert _learns(rewards) > 0.03


def test_paper_mode_networks_run_in_torch():
    # the new pieces lower: concat combine, pooling skip, fc_stack, Caffe's ceil-mode pools
    import torch

    from nasir.backends.torch import lower

    cases = [("nasnet", {"cells_per_stage": 1, "filters": 8, "stem": "cifar"},
              {"normal_b0_combine": "concat", "reduce_b2_combine": "concat"}),
             ("mnasnet", {}, {f"b{b}_skip": "pool" for b in range(1, 8)}),
             ("metaqnn", {}, {"u0_pool": "p3s2", "u0_next": "conv", "u1_pool": "p2s2",
                              "u1_r4_next": "fc", "fc_layers": (256, 128)}),  # 16 → 8 → 4
             ("fbnet", {}, {"s1_l0": "k5_e1_g2"})]
    for name, opts, change in cases:
        size = 16 if name == "metaqnn" else 8
        sp = get_space(name, paper=True, input_shape=(3, size, size), num_classes=10, **opts)
        base = next(iter(sp.references.values()), None) or sp.from_indices(
            [0] * len(sp.decisions))
        a = sp.check({**base, **change}) if name != "metaqnn" else sp.check(
            {"u0_filters": 64, "u0_kernel": 3, "u1_filters": 64, "u1_kernel": 3, **change})
        g = sp.instantiate(a)
        torch.manual_seed(0)
        y = lower(g)(torch.randn(2, 3, size, size))
        assert y.shape == (2, 10) and torch.isfinite(y).all()
