"""Decisions carry structured metadata set by the DSL; it round-trips through the JSON and
text forms, old saved spaces without it still load, and the CLI shows it."""

from __future__ import annotations

import json
import re

import pytest

from nasir.decision_meta import ROLES, DecisionMeta, groups, positions
from nasir.dsl import SpaceBuilder
from nasir.errors import ParseError, SpecError
from nasir.ops import ConvBNActOp, IdentityOp
from nasir.space import Space
from nasir.space_text import parse_space
from nasir.spaces import SPACES, get_space


def _toy() -> Space:
    s = SpaceBuilder("toy", input_shape=(3, 8, 8))
    x = s.input
    for b in range(2):
        with s.scope(stage=0, block=b):
            k = s.value(f"b{b}_kernel", [3, 5], role="kernel")
            x = s.op(ConvBNActOp(out_channels=4, kernel=k), x)
            x = s.choose(f"b{b}_op", {"id": lambda t, h: t.op(IdentityOp(), h),
                                      "conv": lambda t, h: t.op(ConvBNActOp(out_channels=4), h)},
                         x, slot="a")
    return s.build(x)


def test_dsl_sets_metadata_and_scopes_nest() -> None:
    sp = _toy()
    m = {d.label: d.meta.to_json() for d in sp.decisions}
    assert m == {"b0_kernel": {"role": "kernel", "stage": 0, "block": 0},
                 "b0_op": {"role": "op", "stage": 0, "block": 0, "slot": "a"},
                 "b1_kernel": {"role": "kernel", "stage": 0, "block": 1},
                 "b1_op": {"role": "op", "stage": 0, "block": 1, "slot": "a"}}
    assert positions(sp.decisions, role="kernel") == [0, 2]
    assert groups(sp.decisions, "block") == {0: [0, 1], 1: [2, 3]}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_builtin_spaces_round_trip_with_metadata(name: str) -> None:
    sp = get_space(name)
    assert all(d.meta.role in ROLES for d in sp.decisions), "every built-in decision has a role"
    again = Space.from_json(json.loads(json.dumps(sp.to_json())))
    assert [d.meta for d in again.decisions] == [d.meta for d in sp.decisions]
    if name in ("nb201", "darts", "metaqnn", "mnasnet"):  # the text form of every space
        text = sp.text()                                    # round-trips in test_ir too
        assert parse_space(text).text() == text
        assert [d.meta for d in parse_space(text).decisions] == [d.meta for d in sp.decisions]


def test_old_saved_space_loads_with_what_the_kind_tells() -> None:
    obj = get_space("darts").to_json()
    for d in obj["decisions"]:
        del d["meta"]                      # a space saved before decisions had metadata
    old = Space.from_json(obj)
    assert {d.meta for d in old.decisions} == {DecisionMeta(role="op"),
                                               DecisionMeta(role="input")}
    stripped = re.sub(r'(decision \S+ : .*?) meta \{[^}]*\}', r"\1", get_space("darts").text())
    assert "] meta {" not in stripped and "$normal_b0_in_a" in stripped
    assert [d.meta for d in parse_space(stripped).decisions] == \
        [d.meta for d in old.decisions]
    assert "] meta {" not in get_space("nb201").text()  # a role the kind implies: not printed


def test_bad_metadata_is_an_error_that_says_where() -> None:
    with pytest.raises(SpecError, match="unknown decision role 'colour'"):
        DecisionMeta(role="colour")
    with pytest.raises(SpecError, match="block must be int"):
        DecisionMeta(block="1")  # type: ignore[arg-type]
    s = SpaceBuilder("bad", input_shape=(3, 8, 8))
    with pytest.raises(SpecError, match="scope takes"), s.scope(colour=1):
        pass
    with s.scope(block=0):
        s.value("k", [3, 5], role="kernel")
    with pytest.raises(SpecError, match="declared twice with different metadata"):
        s.value("k", [3, 5], role="kernel")
    obj = get_space("nb201").to_json()
    obj["decisions"][0]["meta"] = {"role": "op", "colour": 1}
    with pytest.raises(ParseError) as e:
        Space.from_json(obj)
    assert "$.decisions[0].meta.colour" in str(e.value)
    bad = get_space("darts").text().replace('slot="a"}', 'slot="a", role="nope"}', 1)
    with pytest.raises(ParseError, match="unknown decision role 'nope'"):
        parse_space(bad)


def test_cli_prints_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from nasir.cli import main

    assert main(["spaces", "darts", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    first = rows[0]["schema"][0]
    assert first == {"label": "normal_b0_in_a", "kind": "input", "size": 2,
                     "meta": {"role": "input", "block": 0, "cell": "normal", "slot": "a"}}


def test_deeply_nested_metadata_is_refused_not_a_recursion_error() -> None:
    # found by tests/test_reliability_fuzz.py (space_json): a RecursionError in the reader
    deep: list = []
    x = deep
    for _ in range(5000):
        x.append([])
        x = x[0]
    with pytest.raises(ParseError, match="nested too deeply") as e:
        DecisionMeta.from_json({"windows": deep}, where="decisions.op0.meta")
    assert "decisions.op0.meta" in str(e.value)
