"""Connectivity: which nodes carry the network's input, and whether the output does.

A ``zero`` op (a cell's ``none`` edge) outputs zeros whatever it reads, so a path through
one carries nothing; a node carries the input when it is an ``input`` or reads, through a
node that is not ``zero``, one that does. A derived cell whose every input-to-output path
crosses a ``zero`` is *disconnected*: its output does not depend on its input. One-shot
strategies ask this of derived architectures (``derive_from_probs(none="connect")``).

This is the liveness ``canonicalize`` starts from, without its algebra: a conv with a bias
after a ``zero`` is not zero to ``canonicalize`` (it adds a learned constant), and it does
not carry the input here.

>>> from nasir.graph import Graph
>>> from nasir.ops import AddOp, InputOp, ReLUOp, ZeroOp
>>> g = Graph("g")
>>> x = g.add(InputOp(shape=(1, 4, 4)))
>>> z = g.add(ZeroOp(), [x])
>>> g.set_output(g.add(ReLUOp(), [z]))
>>> is_connected(g), sorted(n.name for n in carrying_nodes(g))
(False, ['1'])
>>> g.set_output(g.add(AddOp(), [x, z]))
>>> ConnectivityPass().apply(g), g.facts["connected"]
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.graph import Graph, Node
from nasir.passes.base import Pass

__all__ = ["ConnectivityPass", "carrying_nodes", "is_connected"]


def carrying_nodes(g: Graph) -> set[Node]:
    """The nodes whose value depends on the graph's input (see the module doc)."""
    live: set[Node] = set()
    for n in g.nodes():
        name = n.op.name
        if name == "input" or (name != "zero" and any(i in live for i in n.inputs)):
            live.add(n)
    return live


def is_connected(g: Graph) -> bool:
    """Whether the output carries the input (a graph without an output is not connected)."""
    return g.has_output and g.output in carrying_nodes(g)


@dataclass(frozen=True)
class ConnectivityPass(Pass):
    """Record whether the output carries the input in ``facts['connected']``.

    Pre: a concrete graph. Post: the graph is unchanged.
    """

    name: ClassVar[str] = "connectivity"
    analysis: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = frozenset({"connected"})

    def apply(self, g: Graph) -> bool:
        g.set_facts(connected=is_connected(g))
        return False
