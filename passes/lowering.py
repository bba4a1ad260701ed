"""The one preparation every backend lowers from: ``prepare_for_lowering``.

A backend (torch, TVM Relax) lowers a *concrete* graph: no choice points left, every node
typed, composites expanded to primitives. Each backend used to do this itself, and only one
of them checked for leftover choice points; now both call this pipeline, so a graph that one
backend accepts the other accepts too, and both reject the same graphs with the same error.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> g = prepare_for_lowering(sp.instantiate(sp.reference("resnet")))
>>> any(n.op.composite for n in g.nodes()), all(n.type is not None for n in g.nodes())
(False, True)
>>> try:
...     prepare_for_lowering(sp.body)
... except BackendError as e:
...     print(e.message)
graph @nb201 still has choice points (choose at %3)
"""

from __future__ import annotations

from nasir.errors import BackendError
from nasir.graph import Graph
from nasir.passes.expand import expand_composites
from nasir.passes.verify import verify

__all__ = ["prepare_for_lowering"]


def prepare_for_lowering(graph: Graph) -> Graph:
    """A verified, typed, composite-free copy of ``graph`` (which is not changed).

    Raises :class:`~nasir.errors.BackendError` for something that is not a graph and for a
    graph that still has choice points (a space's body: instantiate it first), and
    :class:`~nasir.errors.VerifyError` (located) for an ill-typed one.
    """
    if not isinstance(graph, Graph):
        raise BackendError(f"lowering expects a nasir Graph, got {type(graph).__name__}",
                           hint="instantiate a space first: space.instantiate(assignment)")
    bad = next((n for n in graph.nodes() if n.op.space_only), None)
    if bad is not None:
        raise BackendError(
            f"graph @{graph.name} still has choice points ({bad.op.name} at %{bad.name})",
            where=f"%{bad.name}", loc=bad.loc,
            hint="instantiate the space with an assignment, or use Supernet(space) for a "
                 "weight-sharing network of the whole space",
        )
    g = graph.copy()
    verify(g)
    expand_composites(g)
    return g
