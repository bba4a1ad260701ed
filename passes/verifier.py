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

#: (id of an op, its input types) -> (that op, its output type), for at most _MEMO_SIZE
#: entries (then emptied). Keyed by the op's identity (equal ops built apart are typed
#: apart); each entry holds its op, so the id stays that op's while the entry lives. The
#: frozen op itself is never written.
_MEMO: dict[tuple[int, tuple[TensorType, ...]], tuple[Op, TensorType]] = {}
_MEMO_SIZE = 65536


def _infer_new(op: Op, ins: tuple[TensorType, ...]) -> TensorType:
    """``op``'s output type for ``ins``, inferred and remembered (a memo miss)."""
    if op.space_only or has_refs(op):
        raise VerifyError(f"{op.name} still has unresolved choices",
                          hint="instantiate the space with an assignment first")
    t = op.infer(ins)
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[id(op), ins] = (op, t)
    return t


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
    _infer_in_order(g, _order(g))


def _infer_in_order(g: Graph, nodes: list[Node]) -> None:
    memo_get = _MEMO.get
    set_type = g.type_writer()
    for n in nodes:
        op = n.op
        try:
            inputs = n.inputs
            # most nodes have one input: skip building the list (a function in 3.11)
            ins = (inputs[0].type,) if len(inputs) == 1 else tuple([i.type for i in inputs])
            hit = memo_get((id(op), ins))  # type: ignore[arg-type]
            t = hit[1] if hit is not None and hit[0] is op else _infer_new(op, ins)  # type: ignore[arg-type]
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
    nodes = _order(g)
    for n in nodes:  # (a loop, not any(): this runs for every graph a search builds)
        if n.op.name == "input":
            break
    else:
        raise VerifyError(f"graph @{g.name} has no input", hint="add an input() node")
    _infer_in_order(g, nodes)
