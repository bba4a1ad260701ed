"""The pass context: how a :class:`~nasir.passes.base.PassManager` runs (TVM's ``PassContext``).

A context says whether to verify after each rewriting pass, which passes are disabled, and
which instruments watch the passes run (:mod:`nasir.passes.instrument`: timing, printing
the IR). Give it to :meth:`PassManager.run`, or open it with ``with`` so that every
manager run inside uses it.

>>> from nasir.passes import PassContext, parse_pipeline
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = identity(%x)
...   %2 = relu(%1)
...   return %2
... }''')
>>> with PassContext(disabled={"canonicalize"}):
...     parse_pipeline("canonicalize,count-params").run(g)
False
>>> len(g), g.facts["params"]
(3, 0)
>>> try:
...     PassContext(disabled={"canonicalise"})
... except PassError as e:
...     print(e.message)
cannot disable unknown pass(es): canonicalise
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nasir.errors import PassError
from nasir.graph import Graph
from nasir.passes.registry import PASSES

if TYPE_CHECKING:  # pragma: no cover
    from nasir.passes.base import Pass

__all__ = ["PassContext", "PassInstrument"]


class PassInstrument:
    """Hooks a pass manager calls around each pass; subclass and override what you need.

    ``should_run`` may veto a pass; ``run_before_pass`` / ``run_after_pass`` observe it
    (they must not change the graph).
    """

    def should_run(self, g: Graph, p: Pass) -> bool:
        """Whether ``p`` runs on ``g`` (every instrument must agree)."""
        return True

    def run_before_pass(self, g: Graph, p: Pass) -> None:
        """Called just before ``p`` is applied to ``g``."""

    def run_after_pass(self, g: Graph, p: Pass, changed: bool) -> None:
        """Called after ``p`` (and the verification after it) finished on ``g``."""


_STACK: ContextVar[tuple[PassContext, ...]] = ContextVar("nasir_pass_context", default=())


@dataclass(frozen=True)
class PassContext:
    """How passes run: ``verify_each``, ``disabled`` pass names and ``instruments``."""

    verify_each: bool = True
    disabled: frozenset[str] = frozenset()
    instruments: tuple[PassInstrument, ...] = ()

    def __post_init__(self) -> None:
        disabled = self.disabled
        if isinstance(disabled, str) or not isinstance(disabled, Iterable):
            raise PassError(f"disabled must be a set of pass names, not {disabled!r}",
                            hint='e.g. PassContext(disabled={"canonicalize"})')
        object.__setattr__(self, "disabled", frozenset(disabled))
        unknown = sorted(n for n in self.disabled if n not in PASSES)
        if unknown:
            raise PassError(f"cannot disable unknown pass(es): {', '.join(unknown)}",
                            hint=f"known passes: {', '.join(sorted(PASSES))}")
        instruments = tuple(self.instruments)
        bad = [i for i in instruments if not isinstance(i, PassInstrument)]
        if bad:
            raise PassError(f"{bad[0]!r} is not a PassInstrument",
                            hint="subclass nasir.passes.context.PassInstrument")
        object.__setattr__(self, "instruments", instruments)

    @staticmethod
    def current() -> PassContext:
        """The innermost context opened with ``with``, else the default one."""
        stack = _STACK.get()
        return stack[-1] if stack else _DEFAULT

    def __enter__(self) -> PassContext:
        _STACK.set((*_STACK.get(), self))
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _STACK.get()
        if stack and stack[-1] is self:
            _STACK.set(stack[:-1])

    def should_run(self, g: Graph, p: Pass) -> bool:
        """Whether ``p`` is enabled here and every instrument lets it run."""
        if p.name in self.disabled:
            return False
        return all(i.should_run(g, p) for i in self.instruments)

    def before_pass(self, g: Graph, p: Pass) -> None:
        """Tell every instrument that ``p`` is about to run."""
        for i in self.instruments:
            i.run_before_pass(g, p)

    def after_pass(self, g: Graph, p: Pass, changed: bool) -> None:
        """Tell every instrument that ``p`` ran."""
        for i in self.instruments:
            i.run_after_pass(g, p, changed)


_DEFAULT = PassContext()
