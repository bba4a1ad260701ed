"""The text writer of spaces, read back by :func:`nasir.space_text.parse_space`.

It reads a space through its public attributes only, so it imports no :mod:`nasir.space`:
:meth:`nasir.space.Space.text` calls it, and the parser, which builds spaces, sits above both.

>>> from nasir.spaces import get_space
>>> print_space(get_space("nb201")).splitlines()[0]
'space @nb201 {'
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from nasir.decision_meta import default_role
from nasir.printer import format_value, print_graph

if TYPE_CHECKING:
    from nasir.space import Space

__all__ = ["print_space"]


def print_space(sp: Space) -> str:
    """Print ``sp`` in the text form. A decision's metadata is printed after its options
    (``meta {...}``), less a role its kind implies."""
    lines = [f"space @{sp.name} {{"]
    if sp.meta:
        lines.append(f"  meta {json.dumps(sp.meta, sort_keys=True)}")
    for d in sp.decisions:
        opts = format_value(list(d.options))
        loc = f" loc({json.dumps(str(d.loc))})" if d.loc is not None else ""
        meta = d.meta
        if meta.role is not None and meta.role == default_role(d.kind):
            meta = replace(meta, role=None)  # the kind says it (and old texts stay the same)
        mtext = f" meta {meta.text()}" if meta.to_json() else ""
        lines.append(f"  decision ${d.label} : {d.kind} {opts}{mtext}{loc}")
    for c in sp.constraints:
        lines.append(f"  constraint {c.metric} <= {c.max!r}")
    for name, a in sp.references.items():
        lines.append(f"  reference {json.dumps(name)} {a.text()}")
    lines.append(print_graph(sp.body, locs=True, indent="  "))
    lines.append("}")
    return "\n".join(lines)
