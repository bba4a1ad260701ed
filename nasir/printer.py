"""The text writer of graphs: attribute values and nodes, printed the way
:func:`nasir.text.parse_graph` reads them back.

It reads a graph through its public attributes only (``name``, ``nodes()``, a node's ``op``,
``inputs``, ``regions``, ``type``, ``loc``), so it imports no :mod:`nasir.graph`:
:meth:`nasir.graph.Graph.text` calls it, and the parser in :mod:`nasir.text`, which builds
graphs, sits above both.

>>> format_value((1, "a", None, True))
'[1, "a", null, true]'
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from nasir.errors import NasirError
from nasir.ops import Op, Ref

if TYPE_CHECKING:
    from nasir.graph import Graph

__all__ = ["attr_text", "format_value", "print_graph"]


def format_value(v: Any) -> str:
    """Format an attribute value: ints, floats, bools, strings, lists and ``$refs``."""
    if isinstance(v, Ref):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    raise NasirError(f"cannot print attribute value {v!r}")


def attr_text(op: Op) -> str:
    """`` {name=value, ...}`` for the attributes that differ from their defaults ('' if none)."""
    parts = []
    for f in fields(op):
        v = getattr(op, f.name)
        if v != f.default or type(v) is not type(f.default):
            parts.append(f"{f.name}={format_value(v)}")
    return " {" + ", ".join(parts) + "}" if parts else ""


def print_graph(g: Graph, *, types: bool = False, locs: bool = False, indent: str = "") -> str:
    """Print ``g`` in the text form; ``types`` and ``locs`` add inferred types and locations."""
    lines = [f"{indent}graph @{g.name} {{"]
    for n in g.nodes():
        ins = ", ".join(f"%{i.name}" for i in n.inputs)
        line = f"{indent}  %{n.name} = {n.op.name}({ins}){attr_text(n.op)}"
        if n.regions is not None:
            line += " ["
            lines.append(line)
            for key, r in n.regions.items():
                body = print_graph(r, types=types, locs=locs, indent=indent + "    ")
                lines.append(f"{indent}    {json.dumps(key)}: {body.lstrip()}")
            line = f"{indent}  ]"
        if types and n.type is not None:
            line += f" : {n.type}"
        if locs and n.loc is not None:
            line += f" loc({json.dumps(str(n.loc))})"
        lines.append(line)
    if g.has_output:
        lines.append(f"{indent}  return %{g.output.name}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)
