"""CLI subcommands: one module each with ``add_parser(subparsers)`` (``latency-table`` is
module ``latency_table``); listed here in order."""

COMMANDS = [
    "spaces",
    "show",
    "opt",
    "demo",
    "latency",
    "latency-table",
    "search",
    "presets",
    "resume",
    "runs",
    "report",
    "export",
    "bench",
]

__all__ = ["COMMANDS"]
