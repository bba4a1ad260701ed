"""Graph nodes: one operation each, owned by one graph (:mod:`~nasir.graph` re-exports
:class:`Node`; create nodes with :meth:`~nasir.graph.Graph.add`).

A node's op, inputs, type, name and regions are read-only: only its graph changes them,
through its methods (:meth:`~nasir.graph.Graph.replace_op`,
:meth:`~nasir.graph.Graph.set_inputs`, :meth:`~nasir.graph.Graph.set_types` …), so every
change bumps :attr:`~nasir.graph.Graph.version` and no recorded fact can go stale.

>>> from nasir.graph import Graph
>>> from nasir.ops import InputOp, ReLUOp
>>> g = Graph("n")
>>> x = g.add(InputOp(shape=(3, 4, 4)), name="x")
>>> y = g.add(ReLUOp(), [x])
>>> y.op = InputOp(shape=(1,))
Traceback (most recent call last):
nasir.errors.SpecError: Node.op is read-only: %1 belongs to graph @n
  fix:   change it through the graph: g.replace_op(node, op)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nasir.errors import SpecError, VerifyError
from nasir.loc import SourceLoc
from nasir.ops import Op
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.graph import Graph

__all__ = ["Node"]

#: field → the graph method that changes it
_READ_ONLY = {
    "op": "g.replace_op(node, op)",
    "inputs": "g.set_inputs(node, inputs) or g.replace_all_uses(old, new)",
    "type": "run verify(g), which sets every node's type (g.clear_types() forgets them)",
    "name": "build the node under another name (g.add(..., name=...))",
    "regions": "build the node with its regions (g.add(..., regions=...))",
    "_graph": "nodes move between graphs only by g.adopt(other)",
}


class _NodeFields:
    # The storage of a node. Instances are built as this class and then become Nodes
    # (same slots), so construction and reads cost what plain slots cost while writes
    # from outside the graph go through Node.__setattr__ and fail. (Read-only properties
    # over private slots would cost a Python call on every read of every hot loop.)
    __slots__ = ("_graph", "inputs", "loc", "meta", "name", "op", "regions", "type")

    _graph: Graph
    inputs: tuple[Node, ...]
    loc: SourceLoc | None
    meta: dict[str, Any] | None
    name: str
    op: Op
    regions: Mapping[str, Graph] | None
    type: TensorType | None


class Node(_NodeFields):
    """One operation in a graph. Create nodes with :meth:`Graph.add`, never directly.

    ``op``, ``inputs`` (a tuple of nodes of the same graph), ``type`` (set by
    verification), ``name`` and ``regions`` (a read-only mapping of region graphs, for the
    choice points of a space's body) are read-only; ``loc`` and ``meta`` (provenance) are
    free to set.
    """

    __slots__ = ()

    def __init__(self) -> None:
        raise SpecError("nodes are created by their graph",
                        hint="use g.add(op, inputs, ...) instead of Node(...)")

    def __setattr__(self, name: str, value: Any) -> None:
        fix = _READ_ONLY.get(name)
        if fix is not None:
            raise SpecError(
                f"Node.{name} is read-only: %{self.name} belongs to graph @{self._graph.name}",
                hint=f"change it through the graph: {fix}")
        object.__setattr__(self, name, value)

    # pickling and deepcopy restore slots with setattr, which the guard refuses
    def __getstate__(self) -> tuple:
        regions = None if self.regions is None else dict(self.regions)
        return (self._graph, self.op, self.inputs, self.name, self.loc, self.type, regions,
                self.meta)

    def __setstate__(self, state: tuple) -> None:
        graph, op, inputs, name, loc, type_, regions, meta = state
        _fill(self, graph, op, inputs, name, loc, type_, regions, meta)

    @property
    def graph(self) -> Graph:
        """The graph that owns this node."""
        return self._graph

    @property
    def ttype(self) -> TensorType:
        """The node's inferred type; a located :class:`~nasir.errors.VerifyError` when it
        has none yet (run ``verify`` on the graph first)."""
        if self.type is None:
            raise VerifyError(f"%{self.name} ({self.op.name}) has no type yet", loc=self.loc,
                              hint="run nasir.passes.verify(graph) before reading types")
        return self.type

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample shape of the node's inferred type (see :attr:`ttype`)."""
        return self.ttype.shape

    def __repr__(self) -> str:
        return f"<Node %{self.name} = {self.op.name}>"


# -- the graph's writers (nasir.graph is the only caller) ---------------------------------

def new_node(graph: Graph, op: Op, inputs: tuple[Node, ...], name: str,
             loc: SourceLoc | None, regions: Mapping[str, Graph] | None = None,
             type_: TensorType | None = None, meta: dict[str, Any] | None = None) -> Node:
    """A node of ``graph`` (``graph`` files it; :meth:`Graph.add` is the public way)."""
    n: Any = _NodeFields()  # Any: it becomes a Node below (typing.cast is a call)
    n._graph = graph
    n.op = op
    n.inputs = inputs
    n.name = name
    n.loc = loc
    n.type = type_
    n.regions = None if regions is None else MappingProxyType(dict(regions))
    n.meta = meta
    n.__class__ = Node
    return n


def _fill(n: Node, graph: Graph, op: Op, inputs: tuple[Node, ...], name: str,
          loc: SourceLoc | None, type_: TensorType | None,
          regions: Mapping[str, Graph] | None, meta: dict[str, Any] | None) -> None:
    put = object.__setattr__
    for field, value in (("_graph", graph), ("op", op), ("inputs", inputs), ("name", name),
                         ("loc", loc), ("type", type_), ("meta", meta),
                         ("regions", None if regions is None
                          else MappingProxyType(dict(regions)))):
        put(n, field, value)


#: the slots' own setters, which bypass Node.__setattr__ (C calls: no cost on hot paths)
write_graph: Callable[[Node, Graph], None] = _NodeFields.__dict__["_graph"].__set__
write_op: Callable[[Node, Op], None] = _NodeFields.__dict__["op"].__set__
write_inputs: Callable[[Node, tuple[Node, ...]], None] = _NodeFields.__dict__["inputs"].__set__
write_type: Callable[[Node, TensorType | None], None] = _NodeFields.__dict__["type"].__set__
