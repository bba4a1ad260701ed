"""Pass instruments: per-pass timing and printing the IR after passes.

>>> import io
>>> from nasir.passes import PassContext, PassTiming, PrintIRAfter, parse_pipeline
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = identity(%x)
...   return %1
... }''')
>>> timing, out = PassTiming(), io.StringIO()
>>> ctx = PassContext(instruments=(timing, PrintIRAfter({"canonicalize"}, stream=out)))
>>> parse_pipeline("canonicalize,count-params").run(g, ctx)
True
>>> [(name, changed) for name, _, changed in timing.records]
[('canonicalize', True), ('count-params', False)]
>>> print(out.getvalue().strip())
// -----// IR after canonicalize (changed) //----- //
graph @g {
  %x = input() {shape=[4, 8, 8]}
  return %x
}
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

from nasir.graph import Graph
from nasir.passes.context import PassInstrument

if TYPE_CHECKING:  # pragma: no cover
    from nasir.passes.base import Pass

__all__ = ["PassTiming", "PrintIRAfter"]


class PassTiming(PassInstrument):
    """Wall time of each pass run, verification after it included.

    ``records`` lists ``(pass text, seconds, changed)`` in run order; :meth:`report` is a
    table with the total.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, float, bool]] = []
        self._t0 = 0.0

    def run_before_pass(self, g: Graph, p: Pass) -> None:
        self._t0 = time.perf_counter()

    def run_after_pass(self, g: Graph, p: Pass, changed: bool) -> None:
        self.records.append((str(p), time.perf_counter() - self._t0, changed))

    def report(self) -> str:
        """A text table: one line a pass run, then the total."""
        width = max([len(n) for n, _, _ in self.records] + [5])
        lines = [f"// pass timing: {'pass':<{width}}  {'ms':>10}  changed"]
        for name, sec, changed in self.records:
            lines.append(f"//              {name:<{width}}  {sec * 1e3:10.3f}  {changed}")
        total = sum(sec for _, sec, _ in self.records)
        lines.append(f"//              {'total':<{width}}  {total * 1e3:10.3f}")
        return "\n".join(lines)


class PrintIRAfter(PassInstrument):
    """Print the graph's text after the passes named in ``passes`` (all when ``None``).

    ``stream`` defaults to standard error; ``types`` prints inferred types.
    """

    def __init__(self, passes: Iterable[str] | None = None, stream: IO[str] | None = None,
                 types: bool = False) -> None:
        self.passes = None if passes is None else frozenset(passes)
        self.stream = stream
        self.types = types

    def run_after_pass(self, g: Graph, p: Pass, changed: bool) -> None:
        if self.passes is not None and p.name not in self.passes:
            return
        out = self.stream if self.stream is not None else sys.stderr
        state = "changed" if changed else "unchanged"
        print(f"// -----// IR after {p} ({state}) //----- //", file=out)
        print(g.text(types=self.types), file=out)
