"""CLI subcommands: one module each with ``add_parser(subparsers)``; listed here in order."""

COMMANDS = [
    "spaces",
    "show",
    "opt",
    "demo",
    "latency",
    "search",
    "presets",
    "resume",
    "runs",
    "report",
    "export",
    "bench",
]

__all__ = ["COMMANDS"]
