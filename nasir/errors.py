"""One exception tree for everything nasir reports to a user.

Every message says what is wrong, where (node, spec path, source line) and how to fix it.

>>> try:
...     raise SpecError("channels must be positive", where="node %3", hint="use 16")
... except NasirError as e:
...     print(e)
channels must be positive
  where: node %3
  fix:   use 16
"""

from __future__ import annotations

__all__ = [
    "AssignmentError",
    "BackendError",
    "ConstraintError",
    "InfeasibleTrial",
    "NasirError",
    "ParseError",
    "PassError",
    "SpecError",
    "StoreError",
    "TargetError",
    "TrialError",
    "VerifyError",
    "located",
]


class NasirError(Exception):
    """Base of all errors nasir raises on purpose.

    Args:
        message: what is wrong, one line.
        where: where it is wrong: a node, a spec path, a decision label.
        loc: the user's source location (``file:line``) that made the offending thing.
        hint: how to fix it.
        context: extra text shown below (for example the IR around a failing node).
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        loc: object | None = None,
        hint: str | None = None,
        context: str | None = None,
    ) -> None:
        self.message = message
        self.where = where
        self.loc = loc
        self.hint = hint
        self.context = context
        super().__init__(self._render())

    def one_line(self) -> str:
        """The message, where and fix on one line (what the CLI prints when there is no
        IR context to show).

        >>> print(SpecError("bad width", where="space.options", hint="use 8").one_line())
        bad width (where: space.options) — fix: use 8
        """
        out = self.message
        places = [str(p) for p in (self.where, self.loc) if p is not None and str(p)]
        if places:
            out += f" (where: {'; at '.join(places)})"
        if self.hint:
            out += f" — fix: {self.hint}"
        return out

    def _render(self) -> str:
        lines = [self.message]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.loc is not None and str(self.loc):
            lines.append(f"  at:    {self.loc}")
        if self.hint:
            lines.append(f"  fix:   {self.hint}")
        if self.context:
            lines.append(self.context.rstrip())
        return "\n".join(lines)


class SpecError(NasirError):
    """A search space or graph is specified wrongly (bad attribute, unknown op, cycle)."""


class VerifyError(NasirError):
    """A graph fails verification or shape/type inference."""


class AssignmentError(NasirError):
    """An assignment does not fit a space's decision schema."""


class ParseError(NasirError):
    """Text or JSON input could not be read."""


class PassError(NasirError):
    """A pass or a pass pipeline failed or is malformed."""


class ConstraintError(NasirError):
    """A constraint cannot be met (for example no candidate fits a MACs bound)."""


class BackendError(NasirError):
    """Lowering, compilation or measurement in a backend failed."""


class TargetError(NasirError):
    """A hardware target is malformed or unsupported."""


class TrialError(NasirError):
    """A trial failed (diverged, timed out, ran out of memory)."""


class InfeasibleTrial(TrialError):
    """A candidate cannot run where the trial runs (its predicted training memory is above
    the device's free memory): the worker records the trial ``infeasible``, not failed."""


class StoreError(NasirError):
    """The experiment store cannot be read or written."""


def located(e: NasirError, where: str) -> NasirError:
    """``e`` itself when it already says where; else the same error with ``where`` added.

    >>> print(located(ParseError("bad value"), "$.nodes[3]"))
    bad value
      where: $.nodes[3]
    """
    if e.where or (e.loc is not None and str(e.loc)):
        return e
    try:
        return type(e)(e.message, where=where, hint=e.hint, context=e.context)
    except TypeError:  # a subclass with another constructor
        return NasirError(e.message, where=where, hint=e.hint, context=e.context)
