"""A Space is immutable once built; checked assignments carry a token no other space gets;
the instantiation plan of a region follows the region's changes."""

from __future__ import annotations

import gc

import pytest

from nasir.dsl import SpaceBuilder
from nasir.errors import AssignmentError, NasirError
from nasir.ops import Conv2dOp, FlattenOp, LinearOp, ReLUOp
from nasir.space import Space
from nasir.spaces import get_space


def _space(options: list[int]) -> Space:
    s = SpaceBuilder("k", (1, 8, 8))
    x = s.op(Conv2dOp(out_channels=4, kernel=s.value("k", options)), s.input)
    return s.build(s.op(LinearOp(out_features=3), s.op(FlattenOp(), s.op(ReLUOp(), x))))


def test_a_built_space_cannot_be_changed():
    sp = get_space("nb201")
    for name, value in [("name", "x"), ("decisions", ()), ("body", None), ("anything", 1)]:
        with pytest.raises(NasirError, match="immutable"):
            setattr(sp, name, value)
    with pytest.raises(NasirError, match="immutable"):
        del sp.name
    with pytest.raises(TypeError):
        sp.meta["paper"] = "mine"  # type: ignore[index]
    with pytest.raises(TypeError):
        sp.references["mine"] = sp.reference("resnet")  # type: ignore[index]
    # the shared space from get_space is unchanged for the next caller
    assert get_space("nb201").meta["paper"].startswith("NAS-Bench-201")
    assert sp.to_json()["meta"] == dict(sp.meta)


def test_checked_assignments_are_not_trusted_by_another_space_even_at_a_recycled_id():
    wide = _space([1, 3, 5])
    a = wide.check({"k": 5})
    assert wide.owns(a) and wide.instantiate(a).active_decisions == {"k"}
    # spaces made and dropped until one lands at a freed address: the token differs anyway
    seen_ids, recycled = set(), None
    # everything alive now is set aside (gc.freeze), so each collection below walks only
    # the spaces this loop made, not the whole heap of a long test process
    gc.collect()
    gc.freeze()
    try:
        for _ in range(200):
            other = _space([1, 3])
            if id(other) in seen_ids:
                recycled = other
                break
            seen_ids.add(id(other))
            del other
            gc.collect()
    finally:
        gc.unfreeze()
    narrow = recycled or _space([1, 3])
    assert not narrow.owns(a)
    with pytest.raises(AssignmentError, match="k"):
        narrow.instantiate(a)  # 5 is not an option here: it is checked, not trusted


def test_memo_is_computed_once_per_space():
    sp = _space([1, 3])
    calls = []
    assert sp.memo("x", lambda: calls.append(1) or 7) == 7
    assert sp.memo("x", lambda: calls.append(1) or 8) == 7
    assert calls == [1]
    assert _space([1, 3]).memo("x", lambda: 9) == 9


def test_the_instantiation_plan_follows_changes_of_a_region():
    sp = _space([1, 3])
    g1 = sp.instantiate({"k": 3})
    relu = next(n for n in sp.body.nodes() if n.op.name == "relu")
    sp.body.replace_all_uses(relu, relu.inputs[0])  # the body changes through its API
    sp.body.remove_dead()
    g2 = sp.instantiate({"k": 3})
    assert [n.op.name for n in g1.nodes()].count("relu") == 1
    assert [n.op.name for n in g2.nodes()].count("relu") == 0


def test_a_view_must_have_the_same_decisions():
    with pytest.raises(NasirError, match="same decisions"):
        s = SpaceBuilder("k", (1, 8, 8))
        x = s.op(Conv2dOp(out_channels=4, kernel=s.value("k", [1, 3])), s.input)
        s.build(s.op(LinearOp(out_features=3), s.op(FlattenOp(), x)), view=get_space("nb201"))
    sp = get_space("nb201")
    a = sp.reference("resnet")
    assert sp.view is not None and len(sp.hash_view(a)) < len(sp.instantiate(a))


def test_a_frozen_space_copies_and_pickles():
    import copy
    import pickle

    from nasir.space import FrozenDict

    sp = get_space("nb201")
    twin = copy.deepcopy(sp)
    assert twin.meta == sp.meta and set(twin.references) == set(sp.references)
    assert twin.owns(sp.reference("resnet"))  # the same schema, the same token
    with pytest.raises(NasirError, match="immutable"):
        twin.name = "x"
    meta = pickle.loads(pickle.dumps(sp.meta))
    assert isinstance(meta, FrozenDict) and meta == sp.meta
    # spaces and graphs travel to workers by pickle: every op class must be found by name
    # (the activations' generated classes were not: ReluOp vs ReLUOp)
    twin = pickle.loads(pickle.dumps(sp))
    a = sp.reference("resnet")
    assert twin.owns(a) and twin.instantiate(a).text() == sp.instantiate(a).text()
    with pytest.raises(NasirError, match="immutable"):
        twin.name = "x"
