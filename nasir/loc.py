"""Source locations: where in the user's code a node or decision was made."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from types import FrameType

__all__ = ["SourceLoc", "caller_loc"]

_NASIR_DIRS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "passes"),
)


@dataclass(frozen=True, slots=True)
class SourceLoc:
    """A file and line, printed as ``file:line``.

    >>> str(SourceLoc("space.py", 12))
    'space.py:12'
    """

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.file else ""

    @staticmethod
    def parse(text: str) -> SourceLoc | None:
        """Read ``file:line``; ``None`` for an empty string."""
        if not text:
            return None
        file, _, line = text.rpartition(":")
        try:
            return SourceLoc(file, int(line))
        except ValueError:
            return SourceLoc(text, 0)


_cache: dict[tuple[str, int], SourceLoc] = {}


def caller_loc() -> SourceLoc | None:
    """The first stack frame outside nasir's own DSL and IR modules."""
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not fn.startswith(_NASIR_DIRS[0] + os.sep + "dsl") and os.path.dirname(fn) not in (
            _NASIR_DIRS[0],
        ):
            key = (fn, f.f_lineno)
            loc = _cache.get(key)
            if loc is None:
                rel = fn
                with contextlib.suppress(ValueError):
                    rel = os.path.relpath(fn)
                if rel.startswith(".."):
                    rel = fn
                loc = _cache.setdefault(key, SourceLoc(rel, f.f_lineno))
            return loc
        f = f.f_back
    return None
