"""``Space.size`` counts distinct assignments of the active decisions; ``raw_size`` all."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.dsl import SpaceBuilder
from nasir.ops import Conv2dOp, IdentityOp, ReLUOp
from nasir.space_count import brute_force_size, count_active
from nasir.spaces import get_space, list_spaces, metaqnn


def test_nb201_and_spaces_without_inactive_decisions_keep_the_product():
    assert get_space("nb201").size == 15_625
    for name in list_spaces():
        sp = get_space(name)
        assert sp.raw_size == math.prod(d.size for d in sp.decisions)
        assert 1 <= sp.size <= sp.raw_size
        if name != "metaqnn":  # the only built-in space with conditional decisions
            assert sp.size == sp.raw_size, name


def test_metaqnn_counts_only_the_layers_it_builds():
    sp = metaqnn.build(units=2, fc_layers=1)
    assert (sp.raw_size, sp.size) == (27_648, 9_408)
    assert brute_force_size(sp) == 9_408
    # the full space: 1 unit .. 6 units, 0 .. 2 FC layers, counted without enumeration
    full = get_space("metaqnn")
    assert full.size == 162_380_605_296 < full.raw_size == 14_089_640_214_528


def _shared_value_in_two_choices():
    s = SpaceBuilder("shared", input_shape=(4, 8, 8))
    conv = lambda b, h: b.op(Conv2dOp(out_channels=b.value("w", [4, 8, 16])), h)  # noqa: E731
    skip = lambda b, h: b.op(IdentityOp(), h)  # noqa: E731
    x = s.choose("c1", {"conv": conv, "skip": skip}, s.input)
    x = s.choose("c2", {"conv": conv, "skip": skip}, x)
    return s.build(x)


def test_a_value_shared_by_two_branches_counts_once():
    sp = _shared_value_in_two_choices()
    # (conv|skip)² with one shared width: skip,skip = 1; otherwise 3 widths
    assert sp.size == 1 + 3 * 3 == brute_force_size(sp)
    assert sp.raw_size == 12


def test_a_choice_label_at_several_places_and_nested_in_itself():
    s = SpaceBuilder("nested", input_shape=(4, 8, 8))

    def inner(b, h):
        return b.choose("c", {"a": lambda b2, h2: b2.op(Conv2dOp(
            out_channels=b2.value("w", [4, 8])), h2), "b": lambda b2, h2: b2.op(ReLUOp(), h2)}, h)

    x = s.choose("c", {"a": inner, "b": lambda b, h: b.select("s", [h, b.op(ReLUOp(), h)])},
                 s.input)
    x = s.repeat("d", [0, 1, 2], lambda b, h, i: b.choose(
        "c", {"a": lambda b2, h2: b2.op(ReLUOp(), h2),
              "b": lambda b2, h2: b2.op(Conv2dOp(out_channels=b2.value(f"v{i}", [4, 8])),
                                        h2)}, h), x)
    sp = s.build(x)
    assert sp.size == count_active(sp) == brute_force_size(sp)


# -- random spaces with shared labels of every kind --------------------------------------

VALUES = {"v0": [4, 8], "v1": [4, 8, 16], "v2": [8, 16]}
CHOOSES = {"c0": ["a", "b"], "c1": ["a", "b"], "c2": ["a", "b", "c"]}
REPEATS = {"r0": [0, 1, 2], "r1": [1, 2]}


def _body(data, depth: int):
    def make(b, h, *index):
        for _ in range(data.draw(st.integers(1, 2))):
            h = _stmt(data, b, h, depth)
        return h

    return make


def _stmt(data, b, h, depth: int):
    kind = data.draw(st.sampled_from(["value", "select", "choose", "repeat", "relu"]
                                     if depth < 3 else ["value", "select", "relu"]))
    if kind == "value":
        label = data.draw(st.sampled_from(sorted(VALUES)))
        return b.op(Conv2dOp(out_channels=b.value(label, VALUES[label])), h)
    if kind == "select":
        return b.select(data.draw(st.sampled_from(["s0", "s1"])), [h, b.op(ReLUOp(), h)])
    if kind == "choose":
        label = data.draw(st.sampled_from(sorted(CHOOSES)))
        return b.choose(label, {o: _body(data, depth + 1) for o in CHOOSES[label]}, h)
    if kind == "repeat":
        label = data.draw(st.sampled_from(sorted(REPEATS)))
        body = _body(data, depth + 1)
        if data.draw(st.booleans()):
            return b.repeat(label, REPEATS[label], lambda b2, h2, i: body(b2, h2, i), h)
        return b.repeat(label, REPEATS[label], lambda b2, h2: body(b2, h2), h)
    return b.op(ReLUOp(), h)


@settings(max_examples=40)
@given(st.data())
def test_size_equals_brute_force_on_random_spaces(data):
    s = SpaceBuilder("rand", input_shape=(4, 8, 8))
    sp = s.build(_body(data, 0)(s, s.input))
    assert sp.size == brute_force_size(sp)
    assert sp.raw_size == math.prod(d.size for d in sp.decisions)
