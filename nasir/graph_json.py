"""JSON form of graphs, written and read without importing :mod:`nasir.graph`.

The writer reads a graph through its public attributes; the reader builds into the graph
class its caller hands over. So :class:`nasir.graph.Graph` can offer ``to_json`` and
``from_json`` by calling this module, with no import circle; :mod:`nasir.serialize` is the
public façade (``graph_from_json`` reads into a ``Graph``).

>>> value_from_json(value_to_json((1, (2, 3))))
(1, (2, 3))
"""

from __future__ import annotations

import reprlib
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from nasir.errors import NasirError, ParseError, SpecError, located
from nasir.loc import SourceLoc
from nasir.ops import Op, Ref
from nasir.ops.base import make_op
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.graph import Graph

__all__ = ["graph_to_json", "read_graph_json", "value_from_json", "value_to_json"]

G = TypeVar("G", bound="Graph")


def value_to_json(v: Any) -> Any:
    """Attribute value → JSON (tuples become lists, refs become ``{"$ref": label}``)."""
    if isinstance(v, Ref):
        return {"$ref": v.label}
    if isinstance(v, tuple | list):
        return [value_to_json(x) for x in v]
    return v


#: deepest list nesting accepted in an attribute value
MAX_DEPTH = 64


def value_from_json(v: Any, _depth: int = 0) -> Any:
    """JSON → attribute value (lists become tuples)."""
    if _depth > MAX_DEPTH:
        raise ParseError(f"attribute value nested deeper than {MAX_DEPTH} lists")
    if isinstance(v, dict):
        if set(v) == {"$ref"} and isinstance(v["$ref"], str):
            return Ref(v["$ref"])
        raise ParseError(f"bad attribute value {reprlib.repr(v)}",
                         hint='only {"$ref": label} objects')
    if isinstance(v, list):
        return tuple(value_from_json(x, _depth + 1) for x in v)
    return v


def _op_json(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(op):
        v = getattr(op, f.name)
        if v != f.default or type(v) is not type(f.default):
            out[f.name] = value_to_json(v)
    return out


def graph_to_json(g: Graph) -> dict[str, Any]:
    """JSON object: name, nodes (name, op, inputs, attrs, loc, type, regions), output."""
    nodes = []
    for n in g.nodes():
        d: dict[str, Any] = {
            "name": n.name,
            "op": n.op.name,
            "inputs": [i.name for i in n.inputs],
            "attrs": _op_json(n.op),
        }
        if n.loc is not None:
            d["loc"] = str(n.loc)
        if n.type is not None:
            d["type"] = n.type.to_json()
        if n.regions is not None:
            d["regions"] = {k: graph_to_json(r) for k, r in n.regions.items()}
        nodes.append(d)
    return {"name": g.name, "nodes": nodes, "output": g.output.name if g.has_output else None}


def _need(obj: dict, key: str, typ: type | tuple, where: str) -> Any:
    if key not in obj:
        raise ParseError(f"missing field {key!r}", where=where)
    v = obj[key]
    if not isinstance(v, typ):
        raise ParseError(f"field {key!r} has the wrong type ({type(v).__name__})", where=where)
    return v


def _attrs(nd: dict, where: str) -> dict[str, Any]:
    if not isinstance(nd.get("attrs", {}), dict):
        raise ParseError("field 'attrs' must be an object", where=where)
    try:
        return {a: value_from_json(v) for a, v in nd.get("attrs", {}).items()}
    except NasirError as e:
        raise located(e, f"{where}.attrs") from None


def read_graph_json(obj: object, graph: type[G], path: str = "$") -> G:
    """Read the JSON form into a new ``graph(name)`` (the class is handed in, so this module
    needs no :mod:`nasir.graph`); every error names the JSON path of the offending entry."""
    if not isinstance(obj, dict):
        raise ParseError("a graph must be a JSON object", where=path)
    g = graph(str(_need(obj, "name", str, path)))
    nodes = _need(obj, "nodes", list, path)
    pending: dict[str, list[str]] = {}
    for k, nd in enumerate(nodes):
        where = f"{path}.nodes[{k}]"
        if not isinstance(nd, dict):
            raise ParseError("a node must be a JSON object", where=where)
        name = _need(nd, "name", str, where)
        ins = _need(nd, "inputs", list, where)
        attrs = _attrs(nd, where)
        try:
            op = make_op(_need(nd, "op", str, where), attrs, f"{where} (%{name})")
        except NasirError as e:
            raise type(e)(e.message, where=f"{where} (%{name})", hint=e.hint) from None
        missing = [i for i in ins if not isinstance(i, str) or not g.has_node(i)]
        if missing:
            pending[name] = [reprlib.repr(m) for m in missing]
            names = {n.get("name") for n in nodes
                     if isinstance(n, dict) and isinstance(n.get("name"), str)}
            if all(isinstance(m, str) and m in names for m in missing):
                raise SpecError(
                    f"node %{name} uses %{missing[0]} before it is defined: "
                    "the graph has a cycle or is out of order",
                    where=where,
                    hint="list nodes in a topological order without cycles",
                )
            raise SpecError(f"node %{name} uses undefined value %{reprlib.repr(missing[0])}",
                            where=where)
        regions: dict[str, Graph] | None = None
        if "regions" in nd:
            regions = {
                key: read_graph_json(r, graph, f"{where}.regions.{key}")
                for key, r in _need(nd, "regions", dict, where).items()
            }
        try:
            loc = None
            if "loc" in nd:
                if not isinstance(nd["loc"], str):
                    raise ParseError("field 'loc' must be a string", where=where)
                loc = SourceLoc.parse(nd["loc"])
            node_type = TensorType.from_json(nd["type"]) if "type" in nd else None
            g.add(op, [g.node(i) for i in ins], name=name, regions=regions, loc=loc,
                  type_=node_type)
        except NasirError as e:
            raise located(e, where) from None
    out = obj.get("output")
    if out is not None:
        if not isinstance(out, str) or not g.has_node(out):
            raise ParseError(f"output %{reprlib.repr(out)} is not a node", where=f"{path}.output")
        g.set_output(g.node(out))
    return g
