"""CLI subcommands: one module each with ``add_parser(subparsers)``; listed here in order."""

COMMANDS = [
    "spaces",
    "show",
    "opt",
    "demo",
]

__all__ = ["COMMANDS"]
