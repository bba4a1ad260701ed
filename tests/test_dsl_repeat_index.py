"""``SpaceBuilder.repeat`` with an indexed body: per-layer decisions under a depth choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nasir.dsl import SpaceBuilder
from nasir.errors import NasirError
from nasir.ops import Conv2dOp, ConvBNActOp, FlattenOp, GlobalAvgPoolOp, LinearOp, ReLUOp
from nasir.passes import verify
from nasir.passes.hashing import assignment_hash
from nasir.passes.mutation import always_active, mutate, neighbours
from nasir.passes.sampling import UniformSampler
from nasir.space import Space
from nasir.space_count import brute_force_size
from nasir.space_text import parse_space


def _space(indexed: bool = True, counts=(1, 2, 3)) -> Space:
    s = SpaceBuilder("deep", input_shape=(3, 8, 8))
    x = s.op(ConvBNActOp(out_channels=8), s.input)
    if indexed:
        x = s.repeat("depth", list(counts), lambda b, h, i: b.op(
            ConvBNActOp(out_channels=8, kernel=b.value(f"k{i}", [3, 5])), h), x)
    else:
        x = s.repeat("depth", list(counts), lambda b, h: b.op(
            ConvBNActOp(out_channels=8, kernel=b.value("k", [3, 5])), h), x)
    x = s.op(LinearOp(out_features=10), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    refs = {"two": {"depth": 2, "k0": 3, "k1": 5}} if indexed and 2 in counts else {}
    return s.build(x, references=refs)


def _kernels(g) -> list[int]:
    return [n.op.kernel for n in g.nodes() if n.op.name == "conv_bn_act"][1:]


def test_each_repetition_gets_its_own_decisions():
    sp = _space()
    assert [d.label for d in sp.decisions] == ["depth", "k0", "k1", "k2"]
    g = sp.instantiate({"depth": 3, "k0": 3, "k1": 5, "k2": 3})
    verify(g)
    assert _kernels(g) == [3, 5, 3]
    g = sp.instantiate(sp.reference("two"))
    assert _kernels(g) == [3, 5]
    assert g.active_decisions == {"depth", "k0", "k1"}


def test_missing_decision_of_an_active_layer_is_reported():
    sp = _space()
    with pytest.raises(NasirError, match="k1"):
        sp.instantiate({"depth": 2, "k0": 3})
    sp.instantiate({"depth": 1, "k0": 3})  # k1, k2 inactive: not needed


def test_two_argument_bodies_keep_first_and_rest_regions():
    text = _space(indexed=False).text()
    assert '"first": graph @depth.first' in text and '"0":' not in text
    s = SpaceBuilder("fr", input_shape=(4, 8, 8))
    x = s.repeat("n", [1, 3], lambda b, h: b.op(Conv2dOp(out_channels=4, stride=2), h),
                 s.input, rest=lambda b, h: b.op(ReLUOp(), h))
    g = s.build(x).instantiate({"n": 3})
    assert [n.op.name for n in g.nodes()] == ["input", "conv2d", "relu", "relu"]


def test_rest_may_take_the_index():
    s = SpaceBuilder("fr", input_shape=(4, 8, 8))
    x = s.repeat("n", [1, 3], lambda b, h: b.op(Conv2dOp(out_channels=4, stride=2), h),
                 s.input, rest=lambda b, h, i: b.op(Conv2dOp(out_channels=4 * i), h))
    sp = s.build(x)
    g = sp.instantiate({"n": 3})
    verify(g)
    assert [n.type.shape[0] for n in g.nodes()[1:]] == [4, 4, 8]
    assert '"0": graph @n.0' in sp.text()


def test_text_and_json_round_trip():
    sp = _space()
    again = parse_space(sp.text())
    assert again.text() == sp.text()
    via_json = Space.from_json(json.loads(json.dumps(sp.to_json())))
    assert via_json.text() == sp.text()
    a = sp.reference("two")
    assert again.instantiate(a).text() == sp.instantiate(a).text()
    assert via_json.size == sp.size == 2 + 4 + 8


def test_malformed_repeat_regions_are_rejected_by_the_readers():
    text = _space().text()
    cut = text.index('      "2": graph @depth.2')
    end = text.index("    ] loc(", cut)
    broken = text[:cut] + text[end:]
    with pytest.raises(NasirError, match=r"needs one per repetition index, '0' to '2'"):
        parse_space(broken)
    obj = _space().to_json()
    node = next(n for n in obj["body"]["nodes"] if n["op"] == "repeat")
    node["regions"]["first"] = node["regions"].pop("0")
    with pytest.raises(NasirError, match="repeat %"):
        Space.from_json(obj)


def test_sampling_and_mutation_stay_in_the_space():
    sp = _space()
    rng = np.random.default_rng(0)
    for a in UniformSampler(sp).sample(rng, 10):
        verify(sp.instantiate(a))
        b = mutate(sp, a, rng)
        assert b.provenance["label"] in sp.active(a)
        verify(sp.instantiate(b))
    # only the decisions of layers every depth option runs are always active
    assert always_active(sp) == {"depth", "k0"}
    a = sp.check({"depth": 1, "k0": 3, "k1": 3, "k2": 3})
    assert {c.provenance["label"] for c in neighbours(sp, a)} == {"depth", "k0"}


def test_inactive_layer_decisions_change_neither_hash_nor_count():
    sp = _space()
    base = {"depth": 2, "k0": 3, "k1": 5}
    h = assignment_hash(sp, sp.check({**base, "k2": 3}))
    assert assignment_hash(sp, sp.check({**base, "k2": 5})) == h
    assert assignment_hash(sp, sp.check({**base, "k1": 3, "k2": 3})) != h
    assert sp.size == brute_force_size(sp) == 14
    assert sp.raw_size == 24


def test_supernet_over_an_indexed_repeat_matches_its_children():
    from nasir.backends.torch import Supernet

    sp = _space()
    net = Supernet(sp, mode="single", seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    for a in UniformSampler(sp).sample(np.random.default_rng(1), 3):
        net.set_path(a)
        child = net.child(a).eval()
        with torch.no_grad():
            assert torch.equal(net(x), child(x))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True), st.data())
def test_random_counts_and_assignments_give_valid_graphs(counts, data):
    sp = _space(counts=tuple(sorted(counts)))
    idx = [data.draw(st.integers(0, d.size - 1)) for d in sp.decisions]
    a = sp.from_indices(idx)
    g = sp.instantiate(a)
    verify(g)
    assert len(_kernels(g)) == a["depth"]
    assert {f"k{i}" for i in range(a["depth"])} | {"depth"} == g.active_decisions
    assert parse_space(sp.text()).instantiate(a).text() == g.text()
    assert sp.size == brute_force_size(sp)
