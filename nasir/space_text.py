"""Text form of spaces: decisions, references, constraints and the body graph.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> parse_space(sp.text()).text() == sp.text()
True
"""

from __future__ import annotations

import json
from dataclasses import replace

from nasir.decision_meta import default_role
from nasir.errors import NasirError, located
from nasir.space import Constraint, Decision, Space
from nasir.text import Lexer, _parse_graph_body, format_value, parse_attrs, parse_value, print_graph

__all__ = ["parse_space", "print_space"]


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


def _parse_decision(lx: Lexer) -> Decision:
    """``$label : kind [options] meta {role="op", block=1} loc("file:line")`` (after the
    ``decision`` keyword; ``meta`` and ``loc`` are optional)."""
    from nasir.decision_meta import DecisionMeta
    from nasir.loc import SourceLoc

    label = lx.expect("ref")[1:]
    lx.expect("punct", ":")
    kind = lx.expect("id")
    at = lx.i
    opts = parse_value(lx)
    meta_at = lx.i
    meta: dict = {}
    if lx.accept("id", "meta"):
        meta_at = lx.i
        meta = parse_attrs(lx)
    loc = ""
    if lx.accept("id", "loc"):
        lx.expect("punct", "(")
        loc = lx.string()
        lx.expect("punct", ")")
    if not isinstance(opts, tuple):
        lx.i = at
        raise lx.error(f"decision ${label} needs a list of options, found {opts!r}")
    try:
        dmeta = DecisionMeta.from_json(meta, f"decision ${label} meta")
    except NasirError as e:
        lx.i = meta_at
        raise lx.error(e.message + (f" ({e.hint})" if e.hint else "")) from None
    try:
        return Decision(label, kind, opts, SourceLoc.parse(loc), dmeta)
    except NasirError as e:
        lx.i = at
        raise lx.error(e.message + (f" ({e.hint})" if e.hint else "")) from None


def parse_space(text: str, source: str = "<space>") -> Space:
    """Parse the text form of a space."""
    lx = Lexer(text, source)
    lx.expect("id", "space")
    name = lx.expect("sym")[1:]
    lx.expect("punct", "{")
    decisions: list[Decision] = []
    cons: list[Constraint] = []
    refs: dict[str, dict] = {}
    meta: dict = {}
    while True:
        k, v = lx.peek()
        if k == "id" and v == "decision":
            lx.next()
            decisions.append(_parse_decision(lx))
        elif k == "id" and v == "constraint":
            lx.next()
            metric = lx.expect("id")
            lx.expect("punct", "<")
            lx.expect("punct", "=")
            bound = parse_value(lx)
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                lx.i -= 1
                raise lx.error(f"constraint {metric} needs a number, found {bound!r}")
            cons.append(Constraint(metric, float(bound)))
        elif k == "id" and v == "reference":
            lx.next()
            rname = lx.string()
            refs[rname] = parse_attrs(lx)
        elif k == "id" and v == "meta":
            lx.next()
            if lx.peek() != ("punct", "{"):
                raise lx.error("meta must be a JSON object")
            start = lx.toks[lx.i][2]
            depth = 0
            while True:
                _, vv = lx.next()
                if vv == "{":
                    depth += 1
                elif vv == "}":
                    depth -= 1
                    if depth == 0:
                        break
            end = lx.toks[lx.i - 1][2] + 1
            try:
                meta = json.loads(lx.text[start:end])
            except (ValueError, RecursionError) as e:
                raise lx.error_at(start, f"meta is not a JSON object: {e}") from None
            if not isinstance(meta, dict):
                raise lx.error_at(start, "meta must be a JSON object")
        else:
            break
    body = _parse_graph_body(lx)
    lx.expect("punct", "}")
    try:
        sp = Space(name, body, tuple(decisions), refs, tuple(cons), meta)
        sp.validate()
    except NasirError as e:
        raise located(e, f"{source} (space @{name})") from None
    return sp
