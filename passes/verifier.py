"""Verification and shape/type inference of a graph, below the pass manager.

:class:`~nasir.passes.base.PassManager` calls :func:`verify` after each rewriting pass and
:mod:`nasir.passes.verify` wraps it as the ``verify`` / ``infer-shapes`` passes, so this
module imports no pass machinery (the pass manager imports it, never the reverse).

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @ok {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = conv2d(%x) {out_channels=4, kernel=3, padding=1}
...   return %1
... }''')
>>> verify(g); g.output.type
f32[4,8,8]
"""

from __future__ import annotations

import networkx as nx

from nasir.errors import NasirError, VerifyError
from nasir.graph import Graph, Node
from nasir.ops import Op, has_refs
from nasir.types import TensorType

__all__ = ["infer_types", "ir_context", "verify"]

#: per op object: the output types already inferred for (at most 64) input-type tuples.
#: Keyed by the op's identity (equal ops built apart are typed apart, as before); each entry
#: holds its op, so the id stays that op's while the entry lives, and the table is emptied
#: when it reaches _MEMO_OPS ops. The frozen op itself is never written.
_Memo = dict[tuple[TensorType, ...], TensorType]
_MEMO: dict[int, tuple[Op, _Memo]] = {}
_MEMO_OPS = 4096
_MEMO_SIZE = 64


def _new_memo(op: Op) -> _Memo:
    if op.space_only or has_refs(op):
        raise VerifyError(f"{op.name} still has unresolved choices",
                          hint="instantiate the space with an assignment first")
    if len(_MEMO) >= _MEMO_OPS:
        _MEMO.clear()
    memo: _Memo = {}
    _MEMO[id(op)] = (op, memo)
    return memo


def ir_context(g: Graph, node: Node, radius: int = 3) -> str:
    """A few lines of IR around ``node``, the node marked with ``-->``."""
    from nasir.printer import attr_text

    nodes = g.nodes()
    try:
        k = next(i for i, n in enumerate(nodes) if n is node)
    except StopIteration:
        return ""
    lines = ["  IR around the failure:"]
    for n in nodes[max(0, k - radius): k + radius + 1]:
        ins = ", ".join(f"%{i.name}" for i in n.inputs)
        ty = f" : {n.type}" if n.type is not None and n is not node else ""
        mark = "  --> " if n is node else "      "
        lines.append(f"{mark}%{n.name} = {n.op.name}({ins}){attr_text(n.op)}{ty}")
    if k + radius + 1 >= len(nodes) and g.has_output:
        lines.append(f"      return %{g.output.name}")
    return "\n".join(lines)


def _order(g: Graph) -> list[Node]:
    # Graph.add only accepts inputs that already exist, so a graph still in insertion
    # order is topological and acyclic; rewrites that may not be are checked here.
    if g.may_have_cycle:
        cyc = g.find_cycle()
        if cyc:
            path = " -> ".join(f"%{n.name}" for n in [*cyc, cyc[0]])
            raise VerifyError(f"graph @{g.name} has a cycle: {path}", where=f"%{cyc[0].name}",
                              loc=cyc[0].loc, hint="a value may not depend on itself")
        try:
            return g.nodes()
        except nx.NetworkXUnfeasible:  # pragma: no cover - find_cycle above catches it
            raise VerifyError(f"graph @{g.name} has a cycle") from None
    return g.nodes()


def infer_types(g: Graph) -> None:
    """Set every node's type (through the graph's :meth:`~Graph.type_writer`), or raise a
    located ``VerifyError``."""
    memo_of = _MEMO.get
    set_type = g.type_writer()
    for n in _order(g):
        op = n.op
        try:
            inputs = n.inputs
            # most nodes have one input: skip building the list (a function in 3.11)
            ins = (inputs[0].type,) if len(inputs) == 1 else tuple([i.type for i in inputs])
            entry = memo_of(id(op))
            memo = entry[1] if entry is not None and entry[0] is op else _new_memo(op)
            t = memo.get(ins)  # type: ignore[arg-type]
            if t is None:
                t = op.infer(ins)  # type: ignore[arg-type]
                if len(memo) < _MEMO_SIZE:
                    memo[ins] = t  # type: ignore[index]
            if n.type is not t:  # a graph verified before mostly keeps its types
                set_type(n, t)
        except NasirError as e:
            raise VerifyError(e.message, where=f"node %{n.name} ({op.name})", loc=n.loc,
                              hint=e.hint, context=ir_context(g, n)) from None
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise VerifyError(f"{op.name}: cannot infer the output type: {e}",
                              where=f"node %{n.name} ({op.name})", loc=n.loc,
                              context=ir_context(g, n)) from None


def verify(g: Graph) -> None:
    """Check structure (output, acyclicity, arity, no choice points) and infer every type."""
    if not g.has_output:
        raise VerifyError(f"graph @{g.name} has no output", hint="set an output node")
    if not any(n.op.name == "input" for n in g.inputs):
        raise VerifyError(f"graph @{g.name} has no input", hint="add an input() node")
    infer_types(g)
