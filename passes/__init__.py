"""Passes: everything that reads or rewrites IR. Strategies call these, never graphs."""

from nasir.passes.analysis import analyze
from nasir.passes.base import PASSES, Pass, PassManager, get_pass, parse_pipeline, register_pass
from nasir.passes.expand import expand_composites
from nasir.passes.verify import verify

__all__ = [
    "PASSES",
    "Pass",
    "PassManager",
    "analyze",
    "expand_composites",
    "get_pass",
    "parse_pipeline",
    "register_pass",
    "verify",
]
