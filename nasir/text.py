"""Text form of graphs: printed and parsed back identically.

>>> from nasir.ops import InputOp, ReLUOp
>>> src = '''graph @g {
...   %x = input() {shape=[3, 4, 4]}
...   %1 = relu(%x)
...   return %1
... }'''
>>> parse_graph(src).text() == src
True
"""

from __future__ import annotations

import json
import re
from typing import Any

from nasir.errors import NasirError, ParseError
from nasir.graph import Graph, Node
from nasir.loc import SourceLoc
from nasir.ops import Ref
from nasir.ops.base import make_op
from nasir.printer import format_value, print_graph
from nasir.types import TensorType

# the writers live in nasir.printer (nasir.graph uses them); they are re-exported here, with
# the parser that reads their output back
__all__ = ["Lexer", "format_value", "make_op", "parse_graph", "parse_value", "print_graph"]


_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+|\#[^\n]*)
      |(?P<str>"(?:[^"\\]|\\.)*")
      |(?P<num>-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+|-?\d+|-?inf|nan)
      |(?P<val>%[A-Za-z0-9_.]+)
      |(?P<ref>\$[A-Za-z0-9_.]+)
      |(?P<sym>@[A-Za-z0-9_.\-]+)
      |(?P<id>[A-Za-z_][A-Za-z0-9_\-]*)
      |(?P<punct>[{}()\[\]=,:<])
    """,
    re.VERBOSE,
)


class Lexer:
    """Tokens of the text form, with line/column positions for errors."""

    def __init__(self, text: str, source: str = "<text>") -> None:
        self.text = text
        self.source = source
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error_at(pos, f"unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            if kind != "ws":
                self.toks.append((kind, m.group(), pos))
            pos = m.end()
        self.i = 0

    def error_at(self, pos: int, msg: str) -> ParseError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        src_line = self.text.split("\n")[line - 1] if self.text else ""
        return ParseError(
            msg,
            where=f"{self.source}:{line}:{col}",
            context=f"  | {src_line}\n  | {' ' * (col - 1)}^",
        )

    def error(self, msg: str) -> ParseError:
        pos = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)
        return self.error_at(pos, msg)

    def peek(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            return ("eof", "")
        k, v, _ = self.toks[self.i]
        return k, v

    def next(self) -> tuple[str, str]:
        t = self.peek()
        if t[0] == "eof":
            raise self.error("unexpected end of input")
        self.i += 1
        return t

    def expect(self, kind: str, value: str | None = None) -> str:
        k, v = self.peek()
        if k != kind or (value is not None and v != value):
            want = value or kind
            raise self.error(f"expected {want!r}, found {v or k!r}")
        self.i += 1
        return v

    def string(self) -> str:
        """The next token, a string literal, decoded (a bad escape is a located error)."""
        tok = self.expect("str")
        try:
            return str(json.loads(tok))
        except ValueError as e:
            self.i -= 1
            raise self.error(f"bad string literal: {e.args[0] if e.args else e}") from None

    def accept(self, kind: str, value: str | None = None) -> str | None:
        k, v = self.peek()
        if k == kind and (value is None or v == value):
            self.i += 1
            return v
        return None


#: deepest list nesting accepted in a value
MAX_DEPTH = 64


def parse_value(lx: Lexer, _depth: int = 0) -> Any:
    """Parse one attribute value."""
    if _depth > MAX_DEPTH:
        raise lx.error(f"value nested deeper than {MAX_DEPTH} lists")
    k, v = lx.next()
    if k == "num":
        if v in ("inf", "-inf", "nan"):
            return float(v)
        return float(v) if any(c in v for c in ".eE") else int(v)
    if k == "str":
        lx.i -= 1
        return lx.string()
    if k == "ref":
        return Ref(v[1:])
    if k == "id" and v in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[v]
    if k == "punct" and v == "[":
        items = []
        if not lx.accept("punct", "]"):
            while True:
                items.append(parse_value(lx, _depth + 1))
                if lx.accept("punct", "]"):
                    break
                lx.expect("punct", ",")
        return tuple(items)
    lx.i -= 1
    raise lx.error(f"expected a value, found {v!r}")


def parse_attrs(lx: Lexer) -> dict[str, Any]:
    """Parse ``{k=v, ...}`` (the braces included)."""
    attrs: dict[str, Any] = {}
    lx.expect("punct", "{")
    if lx.accept("punct", "}"):
        return attrs
    while True:
        key = lx.expect("id")
        lx.expect("punct", "=")
        attrs[key] = parse_value(lx)
        if lx.accept("punct", "}"):
            return attrs
        lx.expect("punct", ",")


def _parse_graph_body(lx: Lexer) -> Graph:
    lx.expect("id", "graph")
    name = lx.expect("sym")[1:]
    g = Graph(name)
    lx.expect("punct", "{")
    while True:
        if lx.accept("id", "return"):
            out = lx.expect("val")[1:]
            if not g.has_node(out):
                raise lx.error(f"return of undefined value %{out}")
            g.set_output(g.node(out))
            lx.expect("punct", "}")
            return g
        _parse_node(lx, g)


def _parse_node(lx: Lexer, g: Graph) -> Node:
    res = lx.expect("val")[1:]
    lx.expect("punct", "=")
    opname = lx.expect("id")
    lx.expect("punct", "(")
    ins: list[Node] = []
    if not lx.accept("punct", ")"):
        while True:
            ref = lx.expect("val")[1:]
            if not g.has_node(ref):
                lx.i -= 1
                raise lx.error(
                    f"%{ref} is used before it is defined (or the graph has a cycle)"
                )
            ins.append(g.node(ref))
            if lx.accept("punct", ")"):
                break
            lx.expect("punct", ",")
    attrs = parse_attrs(lx) if lx.peek() == ("punct", "{") else {}
    regions = None
    if lx.accept("punct", "["):
        regions = {}
        while not lx.accept("punct", "]"):
            key = lx.string()
            lx.expect("punct", ":")
            regions[key] = _parse_graph_body(lx)
    try:
        op = make_op(opname, attrs, f"%{res}")
    except NasirError as e:
        raise lx.error(e.message + (f" ({e.hint})" if e.hint else "")) from None
    if g.has_node(res):
        raise lx.error(f"%{res} is defined twice")
    node_type = loc = None
    if lx.accept("punct", ":"):
        _, v = lx.next()
        ty = v
        if lx.accept("punct", "["):
            dims = []
            while not lx.accept("punct", "]"):
                dims.append(lx.next()[1])
            ty = f"{v}[{''.join(dims)}]"
        try:
            node_type = TensorType.parse(ty)
        except NasirError as e:
            raise lx.error(e.message) from None
    if lx.accept("id", "loc"):
        lx.expect("punct", "(")
        loc = SourceLoc.parse(lx.string())
        lx.expect("punct", ")")
    return g.add(op, ins, name=res, regions=regions, loc=loc, type_=node_type)


def parse_graph(text: str, source: str = "<text>") -> Graph:
    """Parse the text form of a graph."""
    lx = Lexer(text, source)
    g = _parse_graph_body(lx)
    if lx.peek()[0] != "eof":
        raise lx.error("unexpected text after the graph")
    return g
