"""The typed graph IR: nodes owned by one graph, changed only through graph methods.

Nodes are compared by identity. Each carries its op, its inputs, a name unique in its
graph, the DSL source location that made it and, once inferred, its type. The networkx
graph behind it stays private.

Every change made through the graph's methods bumps :attr:`Graph.version`; the analysis
results in :attr:`Graph.facts` belong to the version they were recorded at and vanish
when the graph changes, so they can never describe a graph that no longer exists
(a pass manager re-records the facts a pass declares it preserves).

>>> from nasir.ops import Conv2dOp, ReLUOp, InputOp
>>> g = Graph("tiny")
>>> x = g.add(InputOp(shape=(3, 8, 8)), name="x")
>>> y = g.add(ReLUOp(), [g.add(Conv2dOp(out_channels=4), [x])])
>>> g.set_output(y)
>>> print(g.text())
graph @tiny {
  %x = input() {shape=[3, 8, 8]}
  %1 = conv2d(%x) {out_channels=4}
  %2 = relu(%1)
  return %2
}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import networkx as nx

from nasir import graph_walks
from nasir.errors import SpecError, VerifyError
from nasir.graph_json import graph_to_json, read_graph_json
from nasir.graph_rewrite import GraphRewrites
from nasir.loc import SourceLoc
from nasir.node import Node, new_node
from nasir.ops import Op
from nasir.printer import print_graph
from nasir.types import TensorType

__all__ = ["Graph", "Node"]


class Graph(GraphRewrites):
    """A directed acyclic graph of typed ops with one output.

    Nodes are kept in insertion order, which :meth:`add` keeps topological. The methods
    that change existing nodes are :class:`~nasir.graph_rewrite.GraphRewrites`'.
    """

    #: the graph whose node holds this graph as a region (its version moves with ours);
    #: a class default too, for graphs pickled before regions had parents
    _parent: Graph | None = None

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self._nodes: list[Node] = []
        self._names: dict[str, Node] = {}
        self._output: Node | None = None
        self._counter = 0
        self._nx_cache: nx.DiGraph | None = None
        self._ordered = True
        self._version = 0
        self._facts: dict[str, Any] = {}
        self._parent = None
        #: for a graph a space instantiated: the labels of the decisions that shaped it
        #: (``None`` for graphs built otherwise)
        self.active_decisions: set[str] | None = None
        #: data other modules derive from the graph and keep on it, by key (e.g. the space
        #: interpreter's plan of a region): like :attr:`facts` emptied by every change, but
        #: neither copied nor shown
        self.derived: dict[str, Any] = {}

    # -- versions and facts ----------------------------------------------------------
    @property
    def version(self) -> int:
        """A counter bumped by every change made through this graph's methods."""
        return self._version

    def _changed(self) -> None:
        self._version += 1
        self._nx_cache = None
        if self._facts:
            self._facts = {}
        if self.derived:
            self.derived = {}
        if self._parent is not None:
            self._parent._changed()

    @property
    def facts(self) -> Mapping[str, Any]:
        """Results of analyses (``params``, ``macs``, ``hash`` …) valid for the graph as it is.

        Read-only: analyses record with :meth:`set_facts`. Any change through the graph's
        methods drops every fact recorded before it.

        >>> from nasir.ops import InputOp, ReLUOp
        >>> g = Graph("f")
        >>> x = g.add(InputOp(shape=(3, 4, 4)), name="x")
        >>> g.set_output(x)
        >>> g.set_facts(params=0)
        >>> dict(g.facts)
        {'params': 0}
        >>> g.set_output(g.add(ReLUOp(), [x]))
        >>> dict(g.facts)
        {}
        """
        return MappingProxyType(self._facts)

    def set_facts(self, **values: Any) -> None:
        """Record analysis results for the graph as it is now (kept until it changes)."""
        self._facts.update(values)

    def drop_facts(self, keep: Iterable[str] = ()) -> None:
        """Forget every recorded fact except those named in ``keep``."""
        kept = set(keep)
        self._facts = {k: v for k, v in self.facts.items() if k in kept}

    # -- building --------------------------------------------------------------------
    def add(
        self,
        op: Op,
        inputs: Sequence[Node] = (),
        *,
        name: str | None = None,
        loc: SourceLoc | None = None,
        regions: Mapping[str, Graph] | None = None,
        type_: TensorType | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Node:
        """Add a node computing ``op`` on ``inputs`` and return it.

        ``type_`` (when already known, e.g. by a rewrite that keeps shapes) and ``meta``
        (provenance such as ``{"origin": "5"}``) are set on the new node. Each graph in
        ``regions`` becomes a region of this graph: a change inside it is a change of this
        graph (it bumps :attr:`version`), so a graph may be the region of one node only.
        """
        ins = tuple(inputs)
        for i in ins:
            if not isinstance(i, Node) or i._graph is not self:
                raise SpecError(
                    f"{op.name}: input {i!r} does not belong to graph @{self.name}",
                    loc=loc,
                    hint="build each node from nodes of the same graph",
                )
        arity = op.arity
        if (arity >= 0 and len(ins) != arity) or (arity < 0 and len(ins) < 1):
            want = "one or more" if arity < 0 else str(arity)
            raise SpecError(
                f"{op.name} takes {want} input(s), got {len(ins)}", where=name, loc=loc
            )
        if name is None:
            self._counter += 1
            name = str(self._counter)
            while name in self._names:
                self._counter += 1
                name = str(self._counter)
        elif name in self._names:
            raise SpecError(f"node name %{name} is used twice in graph @{self.name}", loc=loc)
        elif name.isdigit() and int(name) > self._counter:
            self._counter = int(name)
        if regions is not None:
            self._check_regions(regions, name, loc)
            for r in regions.values():
                r._parent = self
        node = new_node(self, op, ins, name, loc, regions, type_,
                        None if meta is None else dict(meta))
        self._nodes.append(node)
        self._names[name] = node
        self._changed()
        return node

    def append_trusted(self, op: Op, ins: tuple[Node, ...], loc: SourceLoc | None) -> Node:
        """Fast path of :meth:`add` for builders that guarantee what :meth:`add` checks
        (inputs of this graph, the op's arity; e.g. a space's instantiation, which copies
        a verified body): an automatic name, no checks."""
        self._counter += 1
        name = str(self._counter)
        while name in self._names:
            self._counter += 1
            name = str(self._counter)
        node = new_node(self, op, ins, name, loc)
        self._nodes.append(node)
        self._names[name] = node
        self._changed()
        return node

    def _check_regions(self, regions: Mapping[str, Graph], name: str,
                       loc: SourceLoc | None) -> None:
        for key, r in regions.items():
            if not isinstance(r, Graph):
                raise SpecError(f"region {key!r} of %{name} is not a graph: {r!r}", loc=loc,
                                hint="build regions as graphs (the DSL's choose/repeat do)")
            if r._parent is not None:
                raise SpecError(f"graph @{r.name} is already a region of graph "
                                f"@{r._parent.name}; %{name} cannot take it as region {key!r}",
                                loc=loc, hint="give each node its own region graphs "
                                              "(region.copy())")
            g: Graph | None = self
            while g is not None:
                if g is r:
                    raise SpecError(f"graph @{r.name} cannot be a region of itself "
                                    f"(%{name}, region {key!r})", loc=loc)
                g = g._parent

    def set_output(self, node: Node) -> None:
        """Mark ``node`` as the graph's output."""
        if node._graph is not self:
            raise SpecError("output node belongs to another graph")
        if node is not self._output:
            self._output = node
            self._changed()

    # -- reading ---------------------------------------------------------------------
    @property
    def output(self) -> Node:
        """The output node."""
        if self._output is None:
            raise VerifyError(f"graph @{self.name} has no output", hint="call set_output")
        return self._output

    @property
    def has_output(self) -> bool:
        """Whether an output node has been set."""
        return self._output is not None

    @property
    def may_have_cycle(self) -> bool:
        """Whether a rewrite since the last ordering may have made a cycle.

        :meth:`add` only takes inputs that already exist, so a graph only built is
        topological and acyclic; :meth:`set_inputs` and :meth:`replace_all_uses` may not be.
        """
        return not self._ordered

    def is_typed(self) -> bool:
        """Whether every node has an inferred type."""
        return all(n.type is not None for n in self._nodes)

    @property
    def inputs(self) -> list[Node]:
        """Nodes with no inputs that are graph inputs (``input`` and ``arg`` ops)."""
        return [n for n in self._nodes if n.op.name in ("input", "arg")]

    def nodes(self) -> list[Node]:
        """All nodes in a topological order."""
        if not self._ordered:
            order = list(nx.lexicographical_topological_sort(
                self._digraph(), key=lambda n: self._nodes.index(n)))
            self._nodes = order
            self._ordered = True
        return list(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def __len__(self) -> int:
        return len(self._nodes)

    def has_node(self, name: str) -> bool:
        """Whether a node is called ``%name``."""
        return name in self._names

    def node(self, name: str) -> Node:
        """The node called ``%name``."""
        try:
            return self._names[name]
        except KeyError:
            raise SpecError(f"no node %{name} in graph @{self.name}") from None

    def users(self, node: Node) -> list[Node]:
        """Nodes that take ``node`` as an input."""
        return [n for n in self._nodes if any(i is node for i in n.inputs)]

    def _digraph(self) -> nx.DiGraph:
        if self._nx_cache is None:
            self._nx_cache = graph_walks.build_digraph(self._nodes)
        return self._nx_cache

    def find_cycle(self) -> list[Node] | None:
        """Nodes on a cycle, or ``None`` for an acyclic graph."""
        return graph_walks.find_cycle(self._digraph())

    def reachable_from_inputs(self) -> set[Node]:
        """Nodes with a path from a graph input (inputs included)."""
        return graph_walks.reachable_from_inputs(self.nodes())

    def live(self) -> set[Node]:
        """Nodes with a path to the output."""
        return graph_walks.live(self.output)

    # -- forms -----------------------------------------------------------------------
    def text(self, *, types: bool = False, locs: bool = False) -> str:
        """The text form (parsed back by :func:`nasir.text.parse_graph`)."""
        return print_graph(self, types=types, locs=locs)

    def to_json(self) -> dict:
        """The JSON form (read back by :meth:`from_json`)."""
        return graph_to_json(self)

    @staticmethod
    def from_json(obj: object) -> Graph:
        """Read the JSON form (the reader builds the class it is handed, so it needs no
        import of this module)."""
        return read_graph_json(obj, Graph)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self._nodes)} nodes>"
