"""The graph's rewriter API: the methods that change existing nodes (inputs, ops, types,
uses, removal) and that move or copy nodes between graphs. :class:`~nasir.graph.Graph`
inherits them; they are the only writers of a node's fields besides the builder methods
(:meth:`~nasir.graph.Graph.add`), and each change bumps the graph's version (types, derived
from the graph, do not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, cast

from nasir.errors import SpecError
from nasir.node import Node, new_node, write_graph, write_inputs, write_op, write_type
from nasir.ops import Op
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.graph import Graph

__all__ = ["GraphRewrites"]


class GraphRewrites:
    """Mixin of :class:`~nasir.graph.Graph`: its rewriting methods."""

    # the graph's state these methods change (set by Graph.__init__)
    name: str
    _nodes: list[Node]
    _names: dict[str, Node]
    _output: Node | None
    _counter: int
    _ordered: bool
    _version: int
    _facts: dict[str, Any]
    active_decisions: set[str] | None

    if TYPE_CHECKING:  # Graph's own methods these call
        def __init__(self, name: str = "main") -> None: ...
        def _changed(self) -> None: ...
        def users(self, node: Node) -> list[Node]: ...
        def live(self) -> set[Node]: ...
        def nodes(self) -> list[Node]: ...
        add: Callable[..., Node]
        @property
        def facts(self) -> Mapping[str, Any]: ...
        def set_facts(self, **values: Any) -> None: ...

    def set_inputs(self, node: Node, inputs: Iterable[Node]) -> None:
        """Replace the inputs of ``node`` (may break the insertion order; reordered lazily)."""
        ins = tuple(inputs)
        for i in ins:
            if i._graph is not self:
                raise SpecError("input belongs to another graph")
        write_inputs(node, ins)
        self._changed()
        self._ordered = False

    def clear_types(self) -> None:
        """Forget every inferred type, so that verification infers them again (after a
        rewrite that changes shapes downstream, such as a new input resolution)."""
        for n in self._nodes:
            write_type(n, None)

    def set_type(self, node: Node, type_: TensorType | None) -> None:
        """Record the type inferred for ``node``. A type is derived from the graph as it
        is, so this is not a change: :attr:`version` and the facts stay."""
        if node._graph is not self:
            raise SpecError(f"%{node.name} belongs to graph @{node._graph.name}, "
                            f"not @{self.name}", hint="set the types of a graph's own nodes")
        write_type(node, type_)

    def type_writer(self) -> Callable[[Node, TensorType | None], None]:
        """What verification records the types of this graph's nodes with, node by node
        (:func:`nasir.passes.verify.infer_types` is its caller): :meth:`set_type` without
        the ownership check, which on a hot loop costs more than the write itself. The
        caller passes only this graph's nodes.
        """
        return write_type

    def replace_op(self, node: Node, op: Op) -> None:
        """Swap the op of ``node`` in place (its type is inferred again)."""
        if node._graph is not self:
            raise SpecError(f"%{node.name} belongs to another graph")
        write_op(node, op)
        write_type(node, None)
        self._changed()

    def replace_all_uses(self, old: Node, new: Node) -> int:
        """Make every user of ``old`` (and the output) use ``new``; returns the count."""
        count = 0
        for n in self._nodes:
            if any(i is old for i in n.inputs):
                write_inputs(n, tuple(new if i is old else i for i in n.inputs))
                count += 1
        if self._output is old:
            self._output = new
            count += 1
        if count:
            self._changed()
            self._ordered = False
        return count

    def remove(self, node: Node) -> None:
        """Remove a node that nothing uses."""
        if self.users(node) or self._output is node:
            raise SpecError(f"cannot remove %{node.name}: it is still used")
        self._nodes.remove(node)
        del self._names[node.name]
        self._release_regions(node)
        self._changed()

    def remove_dead(self) -> int:
        """Remove nodes with no path to the output (inputs are kept); returns the count."""
        live = self.live()
        dead = [n for n in self._nodes if n not in live and n.op.arity != 0]
        for n in dead:
            self._nodes.remove(n)
            del self._names[n.name]
            self._release_regions(n)
        if dead:
            self._changed()
        return len(dead)

    @staticmethod
    def _release_regions(node: Node) -> None:
        # a removed node's regions are no longer part of this graph
        for r in (node.regions or {}).values():
            r._parent = None

    def empty_like(self) -> Self:
        """A new empty graph with this name whose generated node names continue after ours.

        A pass that rebuilds fills it and hands it to :meth:`adopt`.
        """
        g = type(self)(self.name)
        g._counter = self._counter
        return g

    def adopt(self, other: Self) -> None:
        """Take over the nodes and output of ``other`` (used by passes that rebuild).

        This graph's facts are dropped; the facts ``other`` holds for its own nodes move
        along with them. ``other`` is left empty.
        """
        me = cast("Graph", self)
        for n in other._nodes:
            write_graph(n, me)
            for r in (n.regions or {}).values():
                r._parent = me
        facts = dict(other.facts)
        self._nodes = other._nodes
        self._names = other._names
        self._output = other._output
        self._counter = other._counter
        self._ordered = other._ordered
        self._changed()
        self._facts = facts
        other._nodes = []
        other._names = {}
        other._output = None
        other._changed()

    def copy(self, name: str | None = None) -> Self:
        """A deep copy of the structure (ops are immutable and shared) with its valid facts."""
        g = type(self)(name or self.name)
        owner = cast("Graph", g)
        mapping: dict[Node, Node] = {}
        nodes = g._nodes
        names = g._names
        # what add() checks holds by construction (inputs copied before their users, the
        # names and arities of a valid graph, fresh regions), so nodes are filed directly
        for n in self.nodes():
            regions = None
            if n.regions is not None:
                regions = {k: r.copy() for k, r in n.regions.items()}
                for r in regions.values():
                    r._parent = owner
            m = new_node(owner, n.op, tuple([mapping[i] for i in n.inputs]), n.name, n.loc,
                         regions, n.type, None if n.meta is None else dict(n.meta))
            nodes.append(m)
            names[n.name] = m
            mapping[n] = m
        g._counter = self._counter
        if self.active_decisions is not None:
            g.active_decisions = set(self.active_decisions)
        if self._output is not None:
            g._output = mapping[self._output]
        g._changed()
        g.set_facts(**self.facts)
        return g
