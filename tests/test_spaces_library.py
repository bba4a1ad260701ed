"""The search-space library: reference figures, random assignments, forms, tiny inputs."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
from nasir.ops import ReLUOp
from nasir.passes import analyze, verify
from nasir.serialize import graph_from_json
from nasir.space import Assignment, Space
from nasir.space_text import parse_space
from nasir.spaces import get_reference, get_space, reference_names
from nasir.text import parse_graph

LIBRARY = ["proxylessnas", "fbnet", "mobilenet_v3", "efficientnet", "nasnet", "pnas", "darts",
           "enas_macro", "enas_micro", "metaqnn", "nasrl"]


def counts(space: str, ref: str, **opts) -> dict:
    """Analyses of a reference, built with its own options (REFERENCE_OPTIONS) + ``opts``."""
    sp, a = get_reference(space, ref, **opts)
    return analyze(sp.instantiate(a))


def near(value: float, target: float, tol: float = 0.02) -> bool:
    return abs(value - target) / target <= tol


# -- reference figures ---------------------------------------------------------------------
# (space, reference, build options, exact params or None, (params, MACs) from the source)
PAPER = [
    # ProxylessNAS official repo ImageNet logs / released net configs (exact param counts).
    ("proxylessnas", "proxyless_mobile", {}, 4_080_512, (4.08e6, 320.4e6)),
    ("proxylessnas", "proxyless_gpu", {}, 7_119_848, (7.12e6, 465.3e6)),
    ("proxylessnas", "proxyless_cpu", {}, 4_361_648, (4.36e6, 439.2e6)),
    # FBNet paper Table (A: 4.3M/249M, C: 5.5M/375M); FBNet-B released 4.8M/295.6M.
    ("fbnet", "fbnet_a", {}, None, (4.3e6, 249e6)),
    ("fbnet", "fbnet_b", {}, None, (4.8e6, 295.6e6)),
    ("fbnet", "fbnet_c", {}, None, (5.5e6, 375e6)),
    # torchvision mobilenet_v3_large: 5,483,032 params; paper Table 3: 219M MAdds.
    ("mobilenet_v3", "mobilenet_v3_large", {}, 5_483_032, (5.48e6, 219e6)),
    # torchvision efficientnet_b0: 5,288,548 params; paper Table 2: 0.39B FLOPs.
    ("efficientnet", "efficientnet_b0", {}, 5_288_548, (5.3e6, 390e6)),
    # NASNet paper Table 2 (mobile): NASNet-A (4 @ 1056) 5.3M / 564M.
    ("nasnet", "nasnet_a", {}, 5_289_978, (5.3e6, 564e6)),
    # AmoebaNet paper Table 3 (mobile): AmoebaNet-A (N=4, F=50) 5.1M / 555M; F=50 comes
    # from nasnet.REFERENCE_OPTIONS (no option given here).
    ("nasnet", "amoebanet_a", {}, 5_088_162, (5.1e6, 555e6)),
    # PNAS paper Table 4 (mobile): PNASNet-5 5.1M / 588M.
    ("pnas", "pnasnet_5", {}, None, (5.1e6, 588e6)),
    # DARTS paper Table 1: DARTS (2nd order) 3.3M params on CIFAR-10 without aux head.
    ("darts", "darts_v2", {}, 3_349_342, (3.3e6, None)),
    # Zoph & Le 2017, Table 1 / Fig. 7: 15 layers, no stride or pooling, 4.2M params.
    ("nasrl", "nasrl_v1", {}, 4_201_630, (4.2e6, None)),
    # Baker et al. 2017, Table A2: top CIFAR-10 model, 11.26M params (classifier='flatten'
    # from metaqnn.REFERENCE_OPTIONS; +1.0 %: k//2 pool padding leaves a 6x6 map, not 5x5).
    ("metaqnn", "metaqnn_cifar10", {}, 11_368_458, (11.26e6, None)),
]

# References whose paper figure the released code does not reproduce: (space, reference,
# nasir params, the released code's own count, paper params, source of the paper figure).
NOT_REPRODUCED = [
    # DARTS_V1 (quark0/darts: shipped as DARTS in the 2018-06-25 release, renamed when the
    # rerun DARTS_V2 came on 2018-08-03) through the released model code, whose
    # count_parameters_in_MB leaves the auxiliary head out: 3.169414MB. The paper's 3.3M
    # "DARTS (first order)" cell was never released.
    ("darts", "darts_v1", 3_169_414, 3_169_414, 3.3e6),
    # ENAS scripts/cifar10_micro_final.sh through micro_child._fixed_layer: num_vars
    # 3,894,372 (+10: nasir's classifier bias); paper Table 2 "ENAS + micro": 4.6M.
    ("enas_micro", "enas_cifar10", 3_894_382, 3_894_372, 4.6e6),
    # ENAS scripts/cifar10_macro_final.sh, 24 layers at 96 filters, separable ops as the
    # paper names them: 30,947,424 (+10 bias); paper Table 2 "ENAS + macro": 21.3M.
    ("enas_macro", "enas_cifar10", 30_947_434, 30_947_424, 21.3e6),
]


@pytest.mark.parametrize("space,ref,opts,exact,paper", PAPER,
                         ids=[f"{p[0]}:{p[1]}" for p in PAPER])
def test_reference_matches_its_source(space, ref, opts, exact, paper):
    info = counts(space, ref, **opts)
    if exact is not None:
        assert info["params"] == exact
    params, macs = paper
    assert near(info["params"], params), info
    if macs is not None:
        assert near(info["macs"], macs), info


def test_exact_mac_counts_of_released_mobile_nets():
    # conv + linear multiply-accumulates at 224x224 (released ProxylessNAS configs).
    assert counts("proxylessnas", "proxyless_mobile")["macs"] == 320_427_584
    assert counts("mobilenet_v3", "mobilenet_v3_large")["macs"] == 216_589_760
    assert counts("efficientnet", "efficientnet_b0")["macs"] == 385_814_752


def test_fbnet_expansion_one_convention():
    default = counts("fbnet", "fbnet_b")
    kept = counts("fbnet", "fbnet_b", e1_expand=True)
    assert default["params"] == 4_801_368
    # maskrcnn-benchmark's fbnet_builder keeps a 1x1 expand conv in expansion-1 blocks
    assert kept["params"] == 4_863_288 and kept["macs"] > default["macs"]


@pytest.mark.parametrize("space,ref,exact,released,paper", NOT_REPRODUCED,
                         ids=[f"{p[0]}:{p[1]}" for p in NOT_REPRODUCED])
def test_references_the_papers_figures_do_not_match(space, ref, exact, released, paper):
    params = counts(space, ref)["params"]
    assert params == exact
    assert abs(params - released) <= 10  # nasir's linear bias: the only difference
    assert not near(params, paper)  # documented deviation; if this fails, update the docs


def test_darts_v1_differs_from_v2_by_one_dil_conv_per_normal_cell():
    # DARTS_V1's normal cell has skip_connect where V2 has dil_conv_3x3 (on node 2);
    # every other difference is parameter-free (pools, skips between same-size states).
    # So V1 = V2 (3,349,342, the DARTS logs' 3.349342MB) minus 18 dil_conv_3x3 of
    # 6 normal cells per stage at C = 36, 72, 144: the released code's 3.169414MB.
    from nasir.ops import DilConvOp
    from nasir.types import TensorType

    dil = sum(DilConvOp(out_channels=c, kernel=3).params((TensorType((c, 8, 8)),),
                                                          TensorType((c, 8, 8)))
              for c in (36, 72, 144)) * 6
    assert dil == 179_928
    assert counts("darts", "darts_v2")["params"] - counts("darts", "darts_v1")["params"] == dil


def test_enas_macro_released_child_builds_separable_ops_as_convs():
    # general_child._fixed_layer turns op ids 0-3 into plain 3x3/3x3/5x5/5x5 convs: the
    # network ENAS trained from that arc has 42,559,392 params (nasir: +10 bias).
    sp, a = get_reference("enas_macro", "enas_cifar10")
    plain = {k: v.replace("sep_", "") for k, v in a.items() if k.endswith("_op")}
    assert analyze(sp.instantiate(a.replace(**plain)))["params"] == 42_559_402


def test_reference_options_reach_the_cli():
    from nasir.commands.show import resolve_arch
    from nasir.commands.spaces import space_summary

    sp, a = resolve_arch("nasnet:amoebanet_a")
    assert sp.meta["macro"]["filters"] == 50
    assert analyze(sp.instantiate(a))["params"] == 5_088_162
    assert get_space("nasnet").meta["macro"]["filters"] == 44
    # the 24-layer ENAS arc exists only in 24-layer builds, yet is listed and shown
    assert "enas_cifar10" not in get_space("enas_macro").references
    assert "enas_cifar10" in space_summary("enas_macro", with_unique=False)["references"]
    assert resolve_arch("enas_macro:enas_cifar10")[0].meta["mode"].startswith("final")
    assert reference_names("metaqnn") == ["metaqnn_cifar10"]


# -- every space: random assignments, forms, tiny inputs ------------------------------------
@pytest.mark.parametrize("name", LIBRARY)
@settings(max_examples=8)
@given(data=st.data())
def test_random_assignments_at_digits_size(name, data):
    sp = get_space(name, input_shape=(1, 8, 8), num_classes=10)
    idx = [data.draw(st.integers(0, d.size - 1)) for d in sp.decisions]
    a = sp.from_indices(idx)
    g = sp.instantiate(a)
    verify(g)
    assert str(g.output.type) == "f32[10]"
    text = g.text(types=True)
    assert parse_graph(text).text(types=True) == text
    assert graph_from_json(json.loads(json.dumps(g.to_json()))).text(types=True) == text
    assert Assignment.parse(a.text()) == a
    assert sp.check(json.loads(json.dumps(a.to_json()))) == a


@pytest.mark.parametrize("name", LIBRARY)
def test_space_forms_roundtrip_and_references_instantiate_small(name):
    sp = get_space(name, input_shape=(1, 8, 8), num_classes=10)
    t = sp.text()
    again = parse_space(t)
    assert again.text() == t
    assert Space.from_json(json.loads(json.dumps(sp.to_json()))).text() == t
    for ref, a in sp.references.items():
        assert again.reference(ref) == a
        verify(sp.instantiate(a))


def test_cli_lists_the_library_with_references(capsys):
    from nasir.commands.spaces import space_summary

    rows = {n: space_summary(n, with_unique=False) for n in LIBRARY}
    assert "nasnet_a" in rows["nasnet"]["references"]
    assert set(rows["proxylessnas"]["references"]) == {"proxyless_mobile", "proxyless_gpu",
                                                        "proxyless_cpu"}
    assert rows["darts"]["size"] == (8 ** 8 * (2 * 3 * 4 * 5) ** 2) ** 2


def test_reduction_cell_strides_only_on_cell_inputs():
    sp = get_space("darts")
    g = sp.instantiate(sp.reference("darts_v2"))
    verify(g)
    seen = set()
    for n in g.nodes():
        if n.op.name != "cell_edge" or not n.op.reduce_from:
            continue
        h_in, h_out = n.inputs[0].type.shape[1], n.type.shape[1]
        on_cell_input = h_in == n.op.reduce_from
        assert h_out == ((h_in + 1) // 2 if on_cell_input else h_in)
        seen.add(on_cell_input)
    assert seen == {True, False}  # DARTS-V2's reduction cell reads both kinds of state


def test_composite_counts_survive_expansion():
    from nasir.passes import parse_pipeline
    from nasir.text import parse_graph

    for name, ref in (("nasnet", "amoebanet_a"), ("fbnet", "fbnet_a"), ("enas_micro", None)):
        sp = get_space(name, input_shape=(3, 32, 32), num_classes=10)
        a = sp.reference(ref) if ref else sp.from_indices([0] * len(sp.decisions))
        g = sp.instantiate(a)
        before = analyze(g)
        parse_pipeline("expand-composites").run(g)  # declares the counts preserved
        assert not any(n.op.composite for n in g.nodes())
        assert dict(g.facts) == before
        after = analyze(parse_graph(g.text()))  # a fresh graph, types inferred anew
        assert (before["params"], before["macs"]) == (after["params"], after["macs"])


def test_factorized_conv_edge_uses_1xk_and_kx1_kernels():
    from nasir.graph import Graph
    from nasir.ops import CellEdgeOp, InputOp
    from nasir.passes import expand_composites

    g = Graph("e")
    x = g.add(InputOp(shape=(16, 9, 9)))
    g.set_output(g.add(CellEdgeOp(op="conv_1x7_7x1", out_channels=16, reduce_from=9), [x]))
    verify(g)
    assert str(g.output.type) == "f32[16,5,5]"
    expand_composites(g)
    kernels = [n.op.kernel for n in g.nodes() if n.op.name == "conv2d"]
    # AmoebaNet's bottleneck: 1x1 to C/4, 1x7, 7x1, 1x1 back to C
    assert kernels == [1, (1, 7), (7, 1), 1]


def test_cell_ops_check_their_attributes():
    from nasir.ops import CellEdgeOp, CellOutputOp

    with pytest.raises(SpecError, match="op must be one of"):
        CellEdgeOp(op="conv_9x9", out_channels=8)
    with pytest.raises(SpecError, match="state indices"):
        CellOutputOp(used=(0, -1))


def test_nasnet_keep_changes_the_cell_output():
    sp = get_space("nasnet", input_shape=(3, 32, 32), num_classes=10)
    a = sp.reference("nasnet_a")
    wide = analyze(sp.instantiate(a))["params"]
    narrow = analyze(sp.instantiate(a.replace(normal_keep=(), reduce_keep=())))["params"]
    assert narrow < wide


def test_select_any_options_and_errors():
    s = SpaceBuilder("t", (2, 4, 4))
    a = s.op(ReLUOp(), s.input)
    y = s.select_any("sk", [a, s.input], required=(0,))
    sp = s.build(y)
    assert sp.decision("sk").options == ((0,), (0, 1))
    assert sum(n.op.name == "add" for n in sp.instantiate({"sk": (0, 1)}).nodes()) == 1
    with pytest.raises(SpecError, match="out of range"):
        s.select_any("bad", [a], required=(3,))


# -- build variants (final ENAS children, NAS-RL strides, MetaQNN softmax head) -------------
VARIANTS = [("nasrl", {"strides": True}), ("enas_micro", {"final": True}),
            ("enas_macro", {"final": True}), ("enas_macro", {"skips": "bits"}),
            ("metaqnn", {"classifier": "flatten"})]


@pytest.mark.parametrize("name,opts", VARIANTS,
                         ids=[f"{v[0]}-{next(iter(v[1]))}" for v in VARIANTS])
@settings(max_examples=5)
@given(data=st.data())
def test_random_assignments_of_build_variants(name, opts, data):
    sp = get_space(name, input_shape=(1, 8, 8), num_classes=10, **opts)
    a = sp.from_indices([data.draw(st.integers(0, d.size - 1)) for d in sp.decisions])
    g = sp.instantiate(a)
    verify(g)
    assert str(g.output.type) == "f32[10]"
    text = g.text(types=True)
    assert parse_graph(text).text(types=True) == text


def test_nasrl_strides_pad_anchors_to_the_largest():
    sp = get_space("nasrl", input_shape=(3, 32, 32), strides=True)
    assert sp.decision("l4_sh").options == (1, 2, 3)
    a = sp.from_indices([0] * len(sp.decisions)).replace(
        l0_sh=2, l0_sw=3, l1_sh=3, l1_sw=1, l2_skip=(0, 1))
    g = sp.instantiate(a)
    verify(g)
    pc = [n for n in g.nodes() if n.op.name == "pad_concat"]
    # layer 0 gives 16x11, layer 1 gives 6x11: layer 2 reads both, padded to 16x11
    assert [tuple(i.type.shape[1:]) for i in pc[0].inputs] == [(6, 11), (16, 11)]
    assert tuple(pc[0].type.shape[1:]) == (16, 11)


def test_pad_concat_lowers_alike_to_torch_and_tvm():
    import numpy as np
    import torch

    from nasir.backends.torch import load_weights
    from nasir.backends.torch import lower as torch_lower
    from nasir.backends.tvm import compile_graph, prepare, random_weights
    from nasir.graph import Graph
    from nasir.ops import Conv2dOp, InputOp, PadConcatOp

    g = Graph("pad")
    x = g.add(InputOp(shape=(2, 7, 6)))
    c = g.add(Conv2dOp(out_channels=3, kernel=3, stride=(2, 3)), [x])
    g.set_output(g.add(PadConcatOp(), [c, x]))
    verify(g)
    assert str(g.output.type) == "f32[5,7,6]"
    w = random_weights(prepare(g), 0)
    inp = np.random.default_rng(0).standard_normal((1, 2, 7, 6)).astype(np.float32)
    m = torch_lower(g, seed=0).eval()
    load_weights(m, w)
    with torch.no_grad():
        ref = m(torch.from_numpy(inp)).numpy()
    assert ref.shape == (1, 5, 7, 6)
    assert not ref[:, :3, 4:, :].any() and not ref[:, :3, :, 2:].any()  # zero padding
    np.testing.assert_array_equal(ref[:, 3:], inp)
    got = compile_graph(g, {"kind": "llvm", "opt-level": 0}, batch=1, weights=w).run([inp])[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_enas_arcs_decode_to_the_released_networks():
    from nasir.spaces.enas import ENAS_CIFAR10_ARC, arc_assignment

    sp, a = get_reference("enas_macro", "enas_cifar10")
    assert len(ENAS_CIFAR10_ARC) == 24 and sp.meta["mode"].startswith("final")
    # layer 5 reads skips from the stem, layer 0 and layer 2 ("3 1 1 0 1 0")
    assert a["l5_op"] == "sep_conv_5x5"
    assert [a[f"l5_skip{j}"] for j in range(5)] == [1, 1, 0, 1, 0]
    subset = arc_assignment(ENAS_CIFAR10_ARC)  # the form of a skips="subset" build
    assert subset["l5_skip"] == (0, 1, 2, 4) and subset["l23_skip"][-1] == 20
    g = sp.instantiate(a)
    verify(g)
    widths = sorted({n.type.shape[0] for n in g.nodes() if n.op.name == "relu_conv_bn"})
    assert widths == [96, 192, 384]
    sp, a = get_reference("enas_micro", "enas_cifar10")
    g = sp.instantiate(a)
    verify(g)
    outs = [n for n in g.nodes() if n.op.name == "cell_output"]
    # normal cell: nodes consume only the two inputs, so all 5 nodes are concatenated
    # (5C); reduction cell: node 3 is consumed (4 x 2C)
    assert [n.type.shape[0] for n in outs[:6]] == [180] * 5 + [288]
    assert len(outs) == 17
