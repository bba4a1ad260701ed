"""Pass infrastructure: frozen passes, a lazy registry, text pipelines, verification.

A pass declares what it may change (``analysis = True``: nothing but node types and facts)
and which facts survive it when it does change the graph (``preserves``). The
:class:`PassManager` holds it to that: a graph's facts drop by themselves when the graph
changes (:attr:`nasir.graph.Graph.facts`), the manager re-records the preserved ones, and a
pass that changes the graph while claiming not to is an error. Instrumentation — timing,
printing the IR after passes, disabled passes, verification after each pass — comes from
the :class:`PassContext` (see :mod:`nasir.passes.instrument`).

>>> pm = parse_pipeline("expand-composites,infer-shapes,count-macs")
>>> str(pm)
'expand-composites,infer-shapes,count-macs'
>>> from nasir.spaces import get_space
>>> g = get_space("mobilenet_v2").instantiate({})
>>> _ = pm.run(g); g.facts["macs"]
300774272
>>> _ = parse_pipeline("canonicalize").run(g)   # nothing to remove: the facts stay
>>> g.facts["macs"]
300774272
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.errors import NasirError, PassError
from nasir.graph import Graph
from nasir.passes.context import PassContext
from nasir.passes.registry import PASSES, get_pass, register_pass
from nasir.passes.verifier import verify

__all__ = ["PASSES", "Pass", "PassManager", "get_pass", "parse_pipeline", "register_pass"]

@dataclass(frozen=True)
class Pass:
    """A graph pass: kebab-case ``name``, typed option fields, one :meth:`apply`.

    ``apply`` returns whether it changed the graph. Analyses record results with
    ``graph.set_facts`` (naming them in ``provides``) and return ``False``.
    """

    name: ClassVar[str] = "pass"
    #: the pass changes nothing but node types and facts (no verification afterwards)
    analysis: ClassVar[bool] = False
    #: facts the pass records (so a fresh analysis of a graph knows which pass to run)
    provides: ClassVar[frozenset[str]] = frozenset()
    #: facts that stay true when the pass changes the graph; every other fact is dropped
    preserves: ClassVar[frozenset[str]] = frozenset()

    def apply(self, g: Graph) -> bool:
        """Run on ``g`` in place; return whether the graph changed."""
        raise NotImplementedError

    def __str__(self) -> str:
        from nasir.text import format_value

        opts = [
            f"{f.name}={format_value(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _history(done: list[str]) -> str:
    return ", ".join(done) or "none"


class PassManager:
    """Runs passes in order under a :class:`PassContext`, keeping ``graph.facts`` true.

    ``verify_each=False`` turns verification off for this manager whatever the context
    says. The context is the one given to :meth:`run`, else the innermost ``with
    PassContext(...)``, else the default (verify after each rewriting pass, nothing else).
    """

    def __init__(self, passes: list[Pass], verify_each: bool = True) -> None:
        self.passes = list(passes)
        self.verify_each = verify_each

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.passes)

    def run(self, g: Graph, ctx: PassContext | None = None) -> bool:
        """Apply every enabled pass to ``g``; returns whether any changed it."""
        ctx = ctx if ctx is not None else PassContext.current()
        changed_any = False
        done: list[str] = []
        for p in self.passes:
            if not ctx.should_run(g, p):
                continue
            ctx.before_pass(g, p)
            changed = self._apply(g, p, done)
            done.append(str(p))
            changed_any |= changed
            if changed and not p.analysis and self.verify_each and ctx.verify_each:
                self._verify(g, p, done)
            ctx.after_pass(g, p, changed)
        return changed_any

    @staticmethod
    def _apply(g: Graph, p: Pass, done: list[str]) -> bool:
        version, facts = g.version, dict(g.facts)
        try:
            changed = bool(p.apply(g))
        except NasirError as e:
            raise PassError(f"pass {p} failed: {e.message}", where=e.where, loc=e.loc,
                            hint=e.hint,
                            context=(e.context or "") + f"\n  passes run before: {_history(done)}"
                            ) from e
        if g.version == version:
            return changed
        if p.analysis or not changed:
            claim = "is an analysis" if p.analysis else "reported no change"
            raise PassError(f"pass {p} {claim} but changed graph @{g.name}",
                            where=f"pass {p.name}",
                            hint="return True from apply, and set analysis = False on a pass "
                                 "that rewrites",
                            context=f"  passes run before: {_history(done)}")
        kept = {k: v for k, v in facts.items() if k in p.preserves and k not in g.facts}
        if kept:
            g.set_facts(**kept)
        return True

    @staticmethod
    def _verify(g: Graph, p: Pass, done: list[str]) -> None:
        try:
            verify(g)
        except NasirError as e:
            raise PassError(
                f"verification failed after pass {p}: {e.message}",
                where=e.where, loc=e.loc,
                context=(e.context or "") + f"\n  passes run: {', '.join(done)}",
            ) from e


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_pipeline(text: str, verify_each: bool = True) -> PassManager:
    """Parse ``"a,b{opt=1},c"``; every unknown pass name is reported at once."""
    from nasir.text import Lexer, parse_attrs

    items = _split_top(text)
    unknown = [i.split("{")[0] for i in items if i.split("{")[0] not in PASSES]
    if unknown or not text.strip():
        raise PassError(
            f"unknown pass name(s) in pipeline: {', '.join(unknown) or '(empty)'}",
            where=f"pipeline {text!r}",
            hint=f"known passes: {', '.join(sorted(PASSES))}",
        )
    passes: list[Pass] = []
    for item in items:
        name, _, rest = item.partition("{")
        opts: dict[str, Any] = {}
        if rest:
            lx = Lexer("{" + rest.replace(",", ", "), f"pipeline {name}")
            opts = parse_attrs(lx)
        cls = get_pass(name)
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(opts) - known)
        if bad:
            raise PassError(f"pass {name} has no option(s) {', '.join(bad)}",
                            hint=f"{name} options: {', '.join(sorted(known)) or 'none'}")
        passes.append(cls(**opts))
    return PassManager(passes, verify_each)
