"""Whole-graph walks behind :class:`~nasir.graph.Graph`'s cycle and liveness queries; they
read nodes and their inputs only (the graph's methods are one-line wrappers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from nasir.node import Node

__all__ = ["build_digraph", "find_cycle", "live", "reachable_from_inputs"]


def build_digraph(nodes: Iterable[Node]) -> nx.DiGraph:
    """An input → user edge for every input of every node in ``nodes``."""
    nodes = list(nodes)
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for n in nodes:
        for i in n.inputs:
            g.add_edge(i, n)
    return g


def find_cycle(digraph: nx.DiGraph) -> list[Node] | None:
    """Nodes on a cycle of ``digraph``, or ``None`` when it is acyclic."""
    try:
        edges = nx.find_cycle(digraph)
    except nx.NetworkXNoCycle:
        return None
    return [e[0] for e in edges]


def reachable_from_inputs(nodes: Iterable[Node]) -> set[Node]:
    """Nodes with a path from a graph input (inputs included); ``nodes`` in topological
    order."""
    seen: set[Node] = set()
    for n in nodes:
        if (n.op.arity == 0 or any(i in seen for i in n.inputs)) and n.op.name != "zero":
            seen.add(n)
    return seen


def live(out: Node) -> set[Node]:
    """Nodes with a path to ``out`` (``out`` included)."""
    live = {out}
    stack = [out]
    while stack:
        n = stack.pop()
        for i in n.inputs:
            if i not in live:
                live.add(i)
                stack.append(i)
    return live
