"""Nodes change only through their graph (so every change moves ``Graph.version``), a change
inside a region moves the version of the graph holding it, and verification caches without
writing the frozen op."""

from __future__ import annotations

import copy
import pickle

import pytest

from nasir.dsl import SpaceBuilder
from nasir.errors import NasirError, SpecError
from nasir.graph import Graph
from nasir.node import Node
from nasir.ops import Conv2dOp, FlattenOp, InputOp, LinearOp, ReLUOp
from nasir.passes.verify import verify
from nasir.space import Space
from nasir.types import TensorType


def _graph() -> tuple[Graph, Node, Node]:
    g = Graph("g")
    x = g.add(InputOp(shape=(3, 8, 8)), name="x")
    y = g.add(ReLUOp(), [x])
    g.set_output(y)
    verify(g)
    return g, x, y


@pytest.mark.parametrize(("field", "fix"), [
    ("op", "replace_op"), ("inputs", "set_inputs"), ("type", "verify"),
    ("name", "name="), ("regions", "regions="), ("_graph", "adopt"),
])
def test_a_write_to_a_node_field_from_outside_fails(field, fix):
    g, _, y = _graph()
    before = (y.op, y.inputs, y.type, y.name, y.regions, g.version, g.text(types=True))
    value = {"op": LinearOp(out_features=2), "inputs": (y,), "type": None, "name": "z",
             "regions": {"a": Graph("r")}, "_graph": Graph("h")}[field]
    with pytest.raises(SpecError, match=rf"Node\.{field} is read-only") as e:
        setattr(y, field, value)
    assert fix in str(e.value) and "%1" in str(e.value)
    assert (y.op, y.inputs, y.type, y.name, y.regions, g.version, g.text(types=True)) == before


def test_provenance_fields_stay_free_and_nodes_come_from_graphs():
    _, _, y = _graph()
    y.meta = {"origin": "5"}
    y.loc = None
    assert y.meta == {"origin": "5"}
    with pytest.raises(SpecError, match="created by their graph"):
        Node()


def test_the_graph_methods_are_the_writers_and_bump_the_version():
    g, x, y = _graph()
    g.set_facts(params=0)
    v = g.version
    g.replace_op(y, FlattenOp())
    assert y.op == FlattenOp() and y.type is None and g.version > v and not g.facts
    v = g.version
    z = g.add(ReLUOp(), [x])
    g.set_inputs(y, [z])
    assert y.inputs == (z,) and g.version > v


def test_types_are_set_through_the_graph_without_a_change():
    g, _, y = _graph()
    g.set_facts(params=0)
    v = g.version
    g.set_type(y, TensorType((1,)))
    assert y.type == TensorType((1,)) and g.version == v and g.facts["params"] == 0
    verify(g)
    assert y.type == TensorType((3, 8, 8)) and g.version == v
    _, _, w = _graph()
    with pytest.raises(SpecError, match="belongs to graph"):
        g.set_type(w, None)


def test_nodes_pickle_and_deepcopy_through_the_guard():
    g, _, _ = _graph()
    for twin in (pickle.loads(pickle.dumps(g)), copy.deepcopy(g)):
        assert twin.text(types=True) == g.text(types=True)
        with pytest.raises(SpecError, match="read-only"):
            twin.output.op = ReLUOp()


def _space_with_regions() -> Space:
    s = SpaceBuilder("r", (1, 8, 8))
    x = s.choose("act", {"relu": lambda b, h: b.op(ReLUOp(), h),
                         "conv": lambda b, h: b.op(Conv2dOp(out_channels=1, padding=1), h)},
                 s.input)
    return s.build(s.op(LinearOp(out_features=3), s.op(FlattenOp(), x)))


def test_a_change_inside_a_region_bumps_the_graph_that_holds_it():
    body = _space_with_regions().body
    choice = next(n for n in body.nodes() if n.regions)
    assert choice.regions is not None
    region = choice.regions["relu"]
    assert region._parent is body
    v, rv = body.version, region.version
    relu = next(n for n in region.nodes() if n.op.name == "relu")
    region.replace_op(relu, Conv2dOp(out_channels=1, padding=1))
    assert region.version > rv and body.version > v
    # nested: a region of a region moves every graph above it
    outer = Graph("outer")
    x = outer.add(InputOp(shape=(1, 8, 8)), name="x")
    mid = Graph("mid")
    inner = Graph("inner")
    mid.add(InputOp(shape=(1, 8, 8)), name="a", regions={"in": inner})
    outer.add(ReLUOp(), [x], regions={"mid": mid})
    v = outer.version
    inner.add(InputOp(shape=(1, 8, 8)), name="b")
    assert outer.version > v
    # the regions mapping is read-only, and a graph is the region of one node only
    with pytest.raises(TypeError):
        choice.regions["relu"] = Graph("other")  # type: ignore[index]
    with pytest.raises(SpecError, match="already a region"):
        outer.add(ReLUOp(), [x], regions={"again": mid})
    with pytest.raises(SpecError, match="region of itself"):
        mid.add(ReLUOp(), [mid.node("a")], regions={"loop": outer})


def test_a_removed_node_releases_its_regions():
    g = Graph("g")
    x = g.add(InputOp(shape=(1, 8, 8)), name="x")
    r = Graph("r")
    n = g.add(ReLUOp(), [x], regions={"r": r})
    g.set_output(x)
    g.remove(n)
    v = g.version
    r.add(InputOp(shape=(1, 8, 8)), name="y")
    assert g.version == v and r._parent is None


def test_verification_caches_without_writing_the_op(monkeypatch):
    from nasir.passes import verifier

    _g, x, y = _graph()
    assert "_infer" not in y.op.__dict__
    assert verifier._MEMO[id(y.op), (x.type,)] == (y.op, y.type)
    # the table is bounded: it starts again when full
    monkeypatch.setattr(verifier, "_MEMO_SIZE", 2)
    for _ in range(3):
        _graph()
    assert len(verifier._MEMO) <= 2
    # a space's ops with unresolved choices are still refused
    with pytest.raises(NasirError, match="unresolved choices"):
        verify(_space_with_regions().body)


def test_derived_data_is_dropped_by_any_change_here_or_in_a_region():
    g = Graph("g")
    x = g.add(InputOp(shape=(1, 8, 8)), name="x")
    r = Graph("r")
    a = r.add(InputOp(shape=(1, 8, 8)), name="a")
    r.set_output(a)
    n = g.add(ReLUOp(), [x], regions={"r": r})
    g.set_output(n)
    g.derived["plan"] = r.derived["plan"] = "stale?"
    g.append_trusted(ReLUOp(), (x,), None)  # the builders' fast path drops it too
    assert g.derived == {} and r.derived == {"plan": "stale?"}
    g.derived["plan"] = "stale?"
    r.add(ReLUOp(), [a])  # a change in a region drops the enclosing graph's as well
    assert r.derived == {} and g.derived == {}
    c = g.copy()
    assert c.derived == {}


def test_a_copy_owns_fresh_regions_and_keeps_names_types_and_meta():
    g = Graph("g")
    x = g.add(InputOp(shape=(1, 8, 8)), name="x")
    r = Graph("r")
    r.set_output(r.add(InputOp(shape=(1, 8, 8)), name="a"))
    n = g.add(ReLUOp(), [x], regions={"r": r}, meta={"origin": "5"})
    g.set_output(n)
    verify(g)
    c = g.copy()
    m = c.node(n.name)
    assert [k.name for k in c.nodes()] == [k.name for k in g.nodes()]
    assert m.type == n.type and m.meta == n.meta and m.meta is not n.meta
    assert m.regions is not None and m.regions["r"] is not r
    v, vc = g.version, c.version
    m.regions["r"].add(ReLUOp(), [m.regions["r"].node("a")])  # the copy's region: the copy changes
    assert c.version > vc and g.version == v
    assert c.add(ReLUOp(), [m]).name not in {k.name for k in g.nodes()}
