"""JSON form of graphs (spaces and assignments have theirs in :mod:`nasir.space`).

The reader and writer live in :mod:`nasir.graph_json`, which :mod:`nasir.graph` uses; this
module reads into a :class:`~nasir.graph.Graph`.

>>> from nasir.text import parse_graph
>>> g = parse_graph('graph @g {\\n  %x = input() {shape=[3, 4, 4]}\\n  return %x\\n}')
>>> graph_from_json(graph_to_json(g)).text() == g.text()
True
"""

from __future__ import annotations

from nasir.graph import Graph
from nasir.graph_json import graph_to_json, read_graph_json, value_from_json, value_to_json

__all__ = ["graph_from_json", "graph_to_json", "value_from_json", "value_to_json"]


def graph_from_json(obj: object, path: str = "$") -> Graph:
    """Read the JSON form; every error names the JSON path of the offending entry."""
    return read_graph_json(obj, Graph, path)
