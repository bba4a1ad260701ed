"""The ``nasir`` command line. Each subcommand lives in :mod:`nasir.commands`.

>>> main(["spaces", "--json"]) == 0  # doctest: +ELLIPSIS
[...]
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from nasir.commands import COMMANDS
from nasir.errors import NasirError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    p = _Parser(prog="nasir", description="Neural architecture search built like a compiler.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"nasir.commands.{name.replace('-', '_')}")
        mod.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Errors print one clear line (what, where, how to
    fix; the IR around it below when there is some), no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except NasirError as e:  # one line unless there is IR around the error to show
        print(f"nasir: error: {e if e.context else e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
