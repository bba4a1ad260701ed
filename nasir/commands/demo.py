"""``nasir demo``: the main job on built-in defaults (grows as the search lands)."""

from __future__ import annotations

__all__ = ["add_parser"]


def _run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from nasir.passes.analysis import analyze
    from nasir.spaces import get_space, list_spaces

    con = Console()
    t = Table(title="nasir: built-in spaces and their reference architectures")
    for col in ("space", "decisions", "size", "reference", "params", "MACs", "nodes"):
        t.add_column(col, justify="right" if col in ("params", "MACs", "nodes") else "left")
    for name in list_spaces():
        sp = get_space(name)
        for ref, a in sp.references.items():
            g = sp.instantiate(a)
            info = analyze(g)
            t.add_row(name, str(len(sp.decisions)), f"{sp.size:,}", ref, f"{info['params']:,}",
                      f"{info['macs']:,}", str(len(g)))
    con.print(t)
    return 0


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("demo", help="run the built-in demo job",
                       description="Run nasir's main job on built-in defaults.")
    p.set_defaults(run=_run)
