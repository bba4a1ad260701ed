"""Passes: everything that reads or rewrites IR. Strategies call these, never graphs."""

from nasir.passes.analysis import analyze
from nasir.passes.base import PASSES, Pass, PassManager, get_pass, parse_pipeline, register_pass
from nasir.passes.context import PassContext, PassInstrument
from nasir.passes.expand import expand_composites
from nasir.passes.instrument import PassTiming, PrintIRAfter
from nasir.passes.lowering import prepare_for_lowering
from nasir.passes.verify import verify

__all__ = [
    "PASSES",
    "Pass",
    "PassContext",
    "PassInstrument",
    "PassManager",
    "PassTiming",
    "PrintIRAfter",
    "analyze",
    "expand_composites",
    "get_pass",
    "parse_pipeline",
    "prepare_for_lowering",
    "register_pass",
    "verify",
]
