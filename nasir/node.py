"""Graph nodes: one operation each, owned by one graph (:mod:`~nasir.graph` re-exports
:class:`Node`; create nodes with :meth:`~nasir.graph.Graph.add`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nasir.errors import VerifyError
from nasir.loc import SourceLoc
from nasir.ops import Op
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.graph import Graph

__all__ = ["Node"]


class Node:
    """One operation in a graph. Create nodes with :meth:`Graph.add`, never directly."""

    __slots__ = ("_graph", "inputs", "loc", "meta", "name", "op", "regions", "type")

    def __init__(
        self,
        graph: Graph,
        op: Op,
        inputs: tuple[Node, ...],
        name: str,
        loc: SourceLoc | None,
        regions: dict[str, Graph] | None = None,
    ) -> None:
        self._graph = graph
        self.op = op
        self.inputs = inputs
        self.name = name
        self.loc = loc
        self.type: TensorType | None = None
        self.regions = regions
        self.meta: dict[str, Any] | None = None

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
