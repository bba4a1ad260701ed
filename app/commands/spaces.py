"""``nasir spaces [SPACE...]``: list spaces (default: the built-ins) with their decisions, size
and references; ``--json`` adds each decision's kind, size and metadata (``schema``)."""

from __future__ import annotations

import json

from nasir.spaces import get_space, list_spaces, reference_names

__all__ = ["add_parser", "space_summary"]

#: spaces at most this big get ``unique`` (distinct canonical hashes) computed
UNIQUE_LIMIT = 20_000


def space_summary(name: str, with_unique: bool = True) -> dict:
    """One JSON-able summary of a space (any spec: built-in, registered, file.py:function);
    ``schema`` lists every decision with its kind, number of options and metadata.

    >>> s = space_summary("nb201", with_unique=False)
    >>> s["decisions"], s["schema"][0]
    (6, {'label': 'edge_0_1', 'kind': 'op', 'size': 5, 'meta': {'role': 'op'}})
    """
    from nasir.spaces import is_builtin

    sp = get_space(name)
    out = {
        "name": name,
        "decisions": len(sp.decisions),
        "size": sp.size,
        "references": reference_names(name) if is_builtin(name) else list(sp.references),
        "paper": sp.meta.get("paper", ""),
        "schema": [{"label": d.label, "kind": d.kind, "size": d.size, "meta": d.meta.to_json()}
                   for d in sp.decisions],
    }
    if with_unique and sp.raw_size <= UNIQUE_LIMIT:  # count_unique walks every assignment
        try:
            from nasir.passes.hashing import count_unique
        except ImportError:  # pragma: no cover - hashing pass lands with the passes issue
            return out
        out["unique"] = count_unique(sp)
    return out


def _run(args) -> int:
    rows = [space_summary(n, with_unique=args.json) for n in (args.spaces or list_spaces())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="nasir built-in spaces")
    for col in ("name", "decisions", "size", "references", "paper"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], str(r["decisions"]), f"{r['size']:,}", ", ".join(r["references"]),
                  r["paper"])
    Console().print(t)
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("spaces", help="list built-in search spaces",
                       description="List the built-in search spaces.")
    p.add_argument("spaces", nargs="*", metavar="SPACE",
                   help="spaces to list (default: the built-ins); any space spec, e.g. "
                        "path/to/file.py:function")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(run=_run)
