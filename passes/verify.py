"""Verification and shape/type inference.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @bad {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = linear(%x) {out_features=10}
...   return %1
... }''')
>>> try:
...     VerifyPass().apply(g)
... except VerifyError as e:
...     print(e)
linear: expects a vector (rank 1), got rank 3 (inputs: f32[3,8,8])
  where: node %1 (linear)
  fix:   insert flatten before linear layers
  IR around the failure:
      %x = input() {shape=[3, 8, 8]} : f32[3,8,8]
  --> %1 = linear(%x)
      return %1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import networkx as nx

from nasir.errors import NasirError, VerifyError
from nasir.graph import Graph, Node
from nasir.ops import has_refs
from nasir.passes.base import Pass

__all__ = ["InferShapesPass", "VerifyPass", "ir_context", "verify"]



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
    """Set ``node.type`` on every node, or raise a located ``VerifyError``."""
    for n in _order(g):
        op = n.op
        try:
            ins = tuple([i.type for i in n.inputs])
            cache = op.__dict__.get("_infer")
            if cache is None:
                if op.space_only or has_refs(op):
                    raise VerifyError(f"{op.name} still has unresolved choices",
                                      hint="instantiate the space with an assignment first")
                cache = {}
                object.__setattr__(op, "_infer", cache)
            t = cache.get(ins)
            if t is None:
                t = op.infer(ins)  # type: ignore[arg-type]
                if len(cache) < 64:
                    cache[ins] = t
            n.type = t
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


@dataclass(frozen=True)
class VerifyPass(Pass):
    """Verify the graph. Pre: none. Post: every node has a type; the graph is unchanged."""

    name: ClassVar[str] = "verify"
    analysis: ClassVar[bool] = True

    def apply(self, g: Graph) -> bool:
        verify(g)
        return False


@dataclass(frozen=True)
class InferShapesPass(Pass):
    """Infer the type of every node. Post: ``node.type`` set everywhere."""

    name: ClassVar[str] = "infer-shapes"
    analysis: ClassVar[bool] = True

    def apply(self, g: Graph) -> bool:
        verify(g)
        return False
