"""Text form of spaces: decisions, references, constraints and the body graph.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> parse_space(sp.text()).text() == sp.text()
True
"""

from __future__ import annotations

import json

from nasir.errors import NasirError, located
from nasir.space import Constraint, Decision, Space
from nasir.space_printer import print_space
from nasir.text import Lexer, _parse_graph_body, parse_attrs, parse_value

# the writer lives in nasir.space_printer (Space.text uses it); re-exported here, with the
# parser that reads its output back
__all__ = ["parse_space", "print_space"]


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
