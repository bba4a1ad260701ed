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
from nasir.spaces import get_space
from nasir.text import parse_graph

LIBRARY = ["proxylessnas", "fbnet", "mobilenet_v3", "efficientnet", "nasnet", "pnas", "darts",
           "enas_macro", "enas_micro", "metaqnn", "nasrl"]


def counts(space: str, ref: str, **opts) -> dict:
    sp = get_space(space, **opts)
    return analyze(sp.instantiate(sp.reference(ref)))


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
    # AmoebaNet paper Table 3 (mobile): AmoebaNet-A (N=4, F=50) 5.1M / 555M.
    ("nasnet", "amoebanet_a", {"filters": 50}, None, (5.1e6, 555e6)),
    # PNAS paper Table 4 (mobile): PNASNet-5 5.1M / 588M.
    ("pnas", "pnasnet_5", {}, None, (5.1e6, 588e6)),
    # DARTS paper Table 1: DARTS (2nd order) 3.3M params on CIFAR-10 without aux head.
    ("darts", "darts_v2", {}, 3_349_342, (3.3e6, None)),
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


def test_darts_v1_is_the_released_genotype():
    # The released DARTS_V1 genotype gives 3.17M params; the paper's Table 1 lists 3.3M
    # for the first-order run (see docs/spaces/darts.md). V2 matches exactly (above).
    assert counts("darts", "darts_v1")["params"] == 3_169_414


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
    from nasir.passes import expand_composites

    for name, ref in (("nasnet", "amoebanet_a"), ("fbnet", "fbnet_a"), ("enas_micro", None)):
        sp = get_space(name, input_shape=(3, 32, 32), num_classes=10)
        a = sp.reference(ref) if ref else sp.from_indices([0] * len(sp.decisions))
        g = sp.instantiate(a)
        before = analyze(g)
        expand_composites(g)
        assert not any(n.op.composite for n in g.nodes())
        g.facts.clear()
        for n in g.nodes():
            n.type = None
        after = analyze(g)
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
