"""Facts that cannot go stale, the pass context and its instruments, ``nasir opt`` flags."""

import io
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.errors import PassError
from nasir.graph import Graph
from nasir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    Conv2dOp,
    IdentityOp,
    InputOp,
    MulOp,
    ReLUConvBNOp,
    ReLUOp,
    SqueezeExciteOp,
    ZeroOp,
)
from nasir.passes import (
    Pass,
    PassContext,
    PassManager,
    PassTiming,
    PrintIRAfter,
    analyze,
    parse_pipeline,
)
from nasir.passes.canonicalize import canonicalize
from nasir.text import parse_graph

STALE = """graph @stale {
  %x = input() {shape=[1, 8, 8]}
  %1 = zero(%x)
  %2 = conv2d(%1) {out_channels=1}
  %3 = add(%x, %2)
  return %3
}"""


# -- the case of issue 20 ------------------------------------------------------------------
def test_facts_do_not_outlive_the_graph_they_describe():
    g = parse_graph(STALE)
    parse_pipeline("count-macs").run(g)
    assert (g.facts["params"], g.facts["macs"]) == (9, 576)
    parse_pipeline("canonicalize").run(g)
    assert g.text() == 'graph @stale {\n  %x = input() {shape=[1, 8, 8]}\n  return %x\n}'
    assert dict(g.facts) == {}  # before: params 9, MACs 576 for a graph that is `return %x`
    parse_pipeline("count-macs,canonicalize,count-params").run(g)
    assert (g.facts["params"], g.facts["macs"]) == (0, 0)


def test_one_pipeline_drops_the_facts_of_a_rewrite():
    g = parse_graph(STALE)
    parse_pipeline("count-macs,canonicalize").run(g)
    assert "macs" not in g.facts and "params" not in g.facts


def test_copy_carries_only_valid_facts():
    g = parse_graph(STALE)
    parse_pipeline("count-macs").run(g)
    c = g.copy()
    assert c.facts["macs"] == 576  # the copy is the same graph: its facts hold
    canonicalize(g)  # a rewrite outside any pass manager
    assert dict(g.facts) == {} and dict(g.copy().facts) == {}
    assert c.facts["macs"] == 576 and g.version != c.version


def test_adopt_and_every_graph_method_invalidate():
    g = parse_graph(STALE)
    analyze(g)
    new = g.empty_like()
    x = new.add(InputOp(shape=(1, 8, 8)), name="x")
    new.set_output(new.add(ReLUOp(), [x]))
    g.adopt(new)
    assert dict(g.facts) == {} and len(g) == 2 and len(new) == 0
    analyze(g)
    relu = g.output
    for change in (lambda: g.replace_op(relu, IdentityOp()),
                   lambda: g.set_inputs(relu, [g.node("x")]),
                   lambda: g.replace_all_uses(relu, g.node("x")),
                   lambda: g.remove(relu),
                   lambda: g.add(ReLUOp(), [g.node("x")])):
        analyze(g)
        assert g.facts
        change()
        assert dict(g.facts) == {}, change


def test_facts_are_read_only():
    g = parse_graph(STALE)
    analyze(g)
    with pytest.raises(TypeError):
        g.facts["macs"] = 1  # type: ignore[index]
    g.drop_facts(keep={"macs"})
    assert dict(g.facts) == {"macs": 576}


# -- declarations held by the manager -----------------------------------------------------
@dataclass(frozen=True)
class _SneakyPass(Pass):
    name: ClassVar[str] = "sneaky"
    analysis: ClassVar[bool] = True

    def apply(self, g):
        g.set_output(g.add(ReLUOp(), [g.output]))
        return False


@dataclass(frozen=True)
class _QuietPass(_SneakyPass):
    analysis: ClassVar[bool] = False


def test_a_pass_that_hides_a_change_is_an_error():
    for cls, claim in ((_SneakyPass, "is an analysis"), (_QuietPass, "reported no change")):
        g = parse_graph(STALE)
        with pytest.raises(PassError) as e:
            PassManager([parse_pipeline("count-macs").passes[0], cls()]).run(g)
        assert f"pass sneaky {claim} but changed graph @stale" in str(e.value)
        assert "passes run before: count-macs" in str(e.value)


def test_preserved_facts_survive_and_others_go():
    g = parse_graph("graph @g {\n  %x = input() {shape=[8, 8, 8]}\n"
                    "  %1 = squeeze_excite(%x) {squeeze_channels=2}\n  return %1\n}")
    parse_pipeline("count-params,hash,expand-composites").run(g)
    assert set(g.facts) == {"params", "macs", "activation_bytes"}  # the hash went
    assert {k: g.facts[k] for k in ("params", "macs")} == {
        k: v for k, v in analyze(g.copy()).items() if k in ("params", "macs")}


# -- the property: facts always equal a fresh analysis -------------------------------------
_SHAPE = (4, 8, 8)
_UNARY = [ReLUOp(), IdentityOp(), ZeroOp(), Conv2dOp(out_channels=4), BatchNormOp(),
          Conv2dOp(out_channels=4, kernel=1, bias=True), AvgPool2dOp(stride=1, padding=1),
          ReLUConvBNOp(out_channels=4), SqueezeExciteOp(squeeze_channels=2)]
_PASSES = ["canonicalize", "expand-composites", "count-params", "count-macs",
           "activation-memory", "hash", 'hash{equivalence="nb201"}', "infer-shapes", "verify"]
_PROVIDER = {"params": "count-params", "macs": "count-params",
             "activation_bytes": "count-params", "hash": "hash",
             "hash_nb201": 'hash{equivalence="nb201"}'}


@st.composite
def graphs(draw):
    g = Graph("h")
    nodes = [g.add(InputOp(shape=_SHAPE), name="x")]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary"] * 3 + ["add", "mul"]))
        if kind == "unary":
            op = draw(st.sampled_from(_UNARY))
            nodes.append(g.add(op, [draw(st.sampled_from(nodes))]))
        else:
            k = draw(st.integers(2, 3)) if kind == "add" else 2
            ins = [draw(st.sampled_from(nodes)) for _ in range(k)]
            nodes.append(g.add(AddOp() if kind == "add" else MulOp(), ins))
    g.set_output(draw(st.sampled_from(nodes[1:])))
    return g


@settings(max_examples=150, deadline=None)
@given(graphs(), st.lists(st.sampled_from(_PASSES), min_size=1, max_size=7))
def test_facts_equal_a_fresh_analysis_after_any_pipeline(g, pipeline):
    parse_pipeline(",".join(pipeline)).run(g)
    fresh = g.copy()
    fresh.drop_facts()
    for key in g.facts:
        parse_pipeline(_PROVIDER[key]).run(fresh)
    assert dict(g.facts) == dict(fresh.facts)


# -- the context and its instruments -------------------------------------------------------
def test_context_disables_instruments_and_verification():
    g = parse_graph(STALE)
    timing, out = PassTiming(), io.StringIO()
    ctx = PassContext(disabled={"count-params"},
                      instruments=(timing, PrintIRAfter({"canonicalize"}, stream=out)))
    assert parse_pipeline("count-params,canonicalize,count-macs").run(g, ctx) is True
    assert [(n, c) for n, _, c in timing.records] == [("canonicalize", True),
                                                        ("count-macs", False)]
    assert "IR after canonicalize (changed)" in out.getvalue() and "return %x" in out.getvalue()
    assert "total" in timing.report()
    with PassContext(verify_each=False):
        assert PassContext.current().verify_each is False
    assert PassContext.current().verify_each is True
    with pytest.raises(PassError, match="unknown pass"):
        PassContext(disabled={"canonicalise"})
    with pytest.raises(PassError, match="set of pass names"):
        PassContext(disabled="canonicalize")  # type: ignore[arg-type]
    with pytest.raises(PassError, match="not a PassInstrument"):
        PassContext(instruments=(object(),))  # type: ignore[arg-type]


def test_opt_flags(tmp_path, capsys):
    from nasir.cli import main

    f = tmp_path / "g.txt"
    f.write_text(STALE)
    assert main(["opt", str(f), "-p", "count-macs,canonicalize,count-params", "--timing",
                 "--print-ir-after", "canonicalize", "--disable-pass", "count-macs"]) == 0
    out, err = capsys.readouterr()
    assert out.endswith('// facts: {"activation_bytes": 256, "macs": 0, "params": 0}\n')
    assert "IR after canonicalize (changed)" in err and "// pass timing" in err
    assert "count-macs " not in err.split("// pass timing")[1]  # disabled: neither run nor timed
    assert main(["opt", str(f), "-p", "canonicalize", "--disable-pass", "zap"]) == 2
    assert "zap" in capsys.readouterr().err
    assert main(["opt", str(f), "-p", "canonicalize", "--print-ir-after-all",
                 "--no-verify-each"]) == 0
    assert "IR after canonicalize" in capsys.readouterr().err


_SPACE_PASSES = ["canonicalize", "expand-composites", "count-params", "hash", "infer-shapes"]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_facts_equal_a_fresh_analysis_on_space_architectures(data):
    from nasir.spaces import get_space, list_spaces

    name = data.draw(st.sampled_from(list_spaces()))
    sp = get_space(name, input_shape=(3, 8, 8) if name == "nb201" else (3, 32, 32))
    a = sp.from_indices([data.draw(st.integers(0, d.size - 1)) for d in sp.decisions])
    g = sp.instantiate(a)
    pipeline = data.draw(st.lists(st.sampled_from(_SPACE_PASSES), min_size=1, max_size=5))
    parse_pipeline(",".join(pipeline)).run(g)
    fresh = g.copy()
    fresh.drop_facts()
    for key in g.facts:
        parse_pipeline(_PROVIDER[key]).run(fresh)
    assert dict(g.facts) == dict(fresh.facts)
