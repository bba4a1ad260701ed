"""Pass infrastructure: frozen passes, a lazy registry, text pipelines, verification.

>>> pm = parse_pipeline("expand-composites,infer-shapes,count-macs")
>>> str(pm)
'expand-composites,infer-shapes,count-macs'
>>> from nasir.spaces import get_space
>>> g = get_space("mobilenet_v2").instantiate({})
>>> _ = pm.run(g); g.facts["macs"]
300774272
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.errors import NasirError, PassError
from nasir.graph import Graph

__all__ = ["PASSES", "Pass", "PassManager", "get_pass", "parse_pipeline", "register_pass"]

#: name → "module:Class"; modules are imported only when a pass is asked for
PASSES: dict[str, str] = {
    "verify": "nasir.passes.verify:VerifyPass",
    "infer-shapes": "nasir.passes.verify:InferShapesPass",
    "expand-composites": "nasir.passes.expand:ExpandCompositesPass",
    "count-params": "nasir.passes.analysis:CountParamsPass",
    "count-macs": "nasir.passes.analysis:CountMacsPass",
    "activation-memory": "nasir.passes.analysis:ActivationMemoryPass",
    "canonicalize": "nasir.passes.canonicalize:CanonicalizePass",
    "hash": "nasir.passes.hashing:HashPass",
}


@dataclass(frozen=True)
class Pass:
    """A graph pass: kebab-case ``name``, typed option fields, one :meth:`apply`.

    ``apply`` returns whether it changed the graph. Analyses store results in
    ``graph.facts`` and return ``False``.
    """

    name: ClassVar[str] = "pass"
    #: passes that only read the graph need no verification afterwards
    analysis: ClassVar[bool] = False

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


def register_pass(name: str, target: str) -> None:
    """Register a pass class by ``"module:Class"`` without importing it."""
    PASSES[name] = target


def get_pass(name: str) -> type[Pass]:
    """Import and return the pass class called ``name``."""
    try:
        target = PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}",
                        hint=f"known passes: {', '.join(sorted(PASSES))}") from None
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)


class PassManager:
    """Runs passes in order, verifying after each rewriting pass by default."""

    def __init__(self, passes: list[Pass], verify_each: bool = True) -> None:
        self.passes = list(passes)
        self.verify_each = verify_each

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.passes)

    def run(self, g: Graph) -> bool:
        """Apply every pass to ``g``; returns whether any changed it."""
        from nasir.passes.verify import VerifyPass

        changed_any = False
        done: list[str] = []
        for p in self.passes:
            try:
                changed = p.apply(g)
            except NasirError as e:
                before = ", ".join(done) or "none"
                raise PassError(f"pass {p} failed: {e.message}", where=e.where, loc=e.loc,
                                hint=e.hint,
                                context=(e.context or "") + f"\n  passes run before: {before}"
                                ) from e
            done.append(str(p))
            changed_any |= changed
            if self.verify_each and changed and not p.analysis:
                try:
                    VerifyPass().apply(g)
                except NasirError as e:
                    raise PassError(
                        f"verification failed after pass {p}: {e.message}",
                        where=e.where, loc=e.loc,
                        context=(e.context or "") + f"\n  passes run: {', '.join(done)}",
                    ) from e
        return changed_any


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
