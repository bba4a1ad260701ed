"""``nasir opt FILE -p PIPELINE``: run passes on a saved graph and print it (like mlir-opt).

Instrumentation comes from the pass context (:class:`nasir.passes.PassContext`):
``--timing``, ``--print-ir-after NAMES`` / ``--print-ir-after-all``, ``--disable-pass NAMES``
and ``--verify-each`` / ``--no-verify-each`` (``--no-verify`` kept as its old name).
"""

from __future__ import annotations

import argparse
import json
import sys

from nasir.errors import ParseError

__all__ = ["add_parser", "load_graph"]


def load_graph(path: str):
    """Read a graph from a JSON (``.json``) or text file; ``-`` is standard input."""
    from nasir.graph import Graph
    from nasir.text import parse_graph

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as e:
        raise ParseError(f"cannot read {path!r}: {e.strerror}", where=f"file {path!r}") from None
    except UnicodeDecodeError as e:
        raise ParseError(f"{path} is not UTF-8 text: {e.reason}", where=path) from None
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ParseError(f"{path} is not valid JSON: {e.msg}",
                             where=f"{path}:{e.lineno}:{e.colno}") from None
        except RecursionError:
            raise ParseError(f"{path} nests JSON too deeply", where=path) from None
        return Graph.from_json(obj)
    return parse_graph(text, path)


def _graph(target: str):
    """A graph file, or (when no such file exists) an architecture ``SPACE[:ARCH]``."""
    import os

    if target == "-" or os.path.exists(target):
        return load_graph(target)
    from nasir.commands.show import resolve_arch

    try:
        sp, a = resolve_arch(target)
    except ParseError:
        raise
    except Exception as e:
        raise ParseError(f"{target!r} is neither a graph file nor an architecture",
                         where=f"argument {target!r}", hint=f"{getattr(e, 'message', e)}") from None
    return sp.instantiate(a)


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _context(args):
    """The pass context the flags ask for, and its timing instrument (or ``None``)."""
    from nasir.passes import PassContext, PassTiming, PrintIRAfter

    instruments: list = []
    timing = PassTiming() if args.timing else None
    if timing is not None:
        instruments.append(timing)
    if args.print_ir_after_all or args.print_ir_after:
        after = None if args.print_ir_after_all else _names(args.print_ir_after)
        instruments.append(PrintIRAfter(after, types=args.types))
    ctx = PassContext(verify_each=args.verify_each, disabled=frozenset(_names(args.disable_pass)),
                      instruments=tuple(instruments))
    if args.print_ir_after and not args.print_ir_after_all:
        _check_names(_names(args.print_ir_after), "--print-ir-after")
    return ctx, timing


def _check_names(names: list[str], flag: str) -> None:
    from nasir.errors import PassError
    from nasir.passes import PASSES

    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise PassError(f"{flag}: unknown pass name(s) {', '.join(unknown)}",
                        hint=f"known passes: {', '.join(sorted(PASSES))}")


def _run(args) -> int:
    from nasir.passes.base import parse_pipeline

    g = _graph(args.file)
    pm = parse_pipeline(args.pipeline)
    ctx, timing = _context(args)
    pm.run(g, ctx)
    if timing is not None:
        print(timing.report(), file=sys.stderr)
    if args.json:
        print(json.dumps(g.to_json(), indent=1))
    else:
        print(g.text(types=args.types))
        if g.facts:
            print("// facts: " + json.dumps(dict(g.facts), sort_keys=True, default=str))
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("opt", help="run a pass pipeline on a saved graph",
                       description="Run a pass pipeline on a graph file and print the result.")
    p.add_argument("file", help="graph as JSON or text ('-' for stdin), or an architecture "
                                "SPACE[:ARCH] (any space spec, e.g. mine.py:build:small)")
    p.add_argument("-p", "--pipeline", required=True,
                   help="comma-separated passes, e.g. expand-composites,infer-shapes")
    p.add_argument("--json", action="store_true", help="print the JSON form")
    p.add_argument("--types", action="store_true", help="print inferred types")
    p.add_argument("--verify-each", action=argparse.BooleanOptionalAction, default=True,
                   help="verify the graph after each pass that changed it (default: on)")
    p.add_argument("--no-verify", dest="verify_each", action="store_false",
                   help="same as --no-verify-each")
    p.add_argument("--disable-pass", metavar="NAMES",
                   help="comma-separated pass names to skip wherever they occur")
    p.add_argument("--print-ir-after", metavar="NAMES",
                   help="print the IR to stderr after each run of these passes")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR to stderr after every pass")
    p.add_argument("--timing", action="store_true",
                   help="print each pass's wall time to stderr (verification included)")
    p.set_defaults(run=_run)
