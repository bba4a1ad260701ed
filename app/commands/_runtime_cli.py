"""Shared pieces of the run commands (search, resume, runs, report, export, demo)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

__all__ = ["one_line_errors", "parse_kv", "positive_float", "positive_int", "print_summary",
           "seconds"]


def one_line_errors(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``p`` report a bad option as one line (option, value, valid values), no usage."""

    def error(message: str) -> NoReturn:
        sys.stderr.write(f"{p.prog}: error: {message} (see {p.prog} --help)\n")
        sys.exit(2)

    # an instance's override (the parsers come from add_parser): what method-assign flags
    p.error = error  # type: ignore[method-assign]
    return p


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        return v

    return parse


#: argparse type: an integer >= 1
positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return v


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_kv(option: str) -> Callable[[str], tuple[str, Any]]:
    """argparse type for ``KEY=VALUE`` (the value read as JSON when it parses, else text)."""

    def parse(text: str) -> tuple[str, Any]:
        key, sep, val = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{option} expects KEY=VALUE, got {text!r}")
        return key.strip(), _value(val)

    return parse


def print_summary(summary: Mapping[str, Any], objectives: Mapping[str, str]) -> None:
    """The end-of-run block: counts, the Pareto front table and the best trial."""

    from nasir.runtime.console import out_console, pareto_table
    from nasir.runtime.results import pareto_trials
    from nasir.runtime.store import RunStore

    con = out_console()
    store = RunStore.open(summary["run"])
    try:
        trials = store.trials()
        front = pareto_trials(trials, objectives)
        c = summary["counts"]
        con.print(f"[bold]run[/] {summary['run']}: {c['done']} done, {c['failed']} failed, "
                  f"{c['infeasible']} infeasible in {float(summary['elapsed_s'] or 0):.0f} s")
        if front:
            con.print(pareto_table(front, list(objectives),
                                   title="Pareto front (" + " vs ".join(
                                       f"{k} {v}" for k, v in objectives.items()) + ")"))
        best = store.best()
        if best:
            con.print(f"[bold]best reward[/] {best['reward']:.4f} (trial {best['id']}): "
                      + ", ".join(f"{k}={v}" for k, v in best["assignment"].items()))
    finally:
        store.close()
