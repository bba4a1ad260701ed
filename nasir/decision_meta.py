"""Structured metadata of a decision, and the small query API strategies ask.

A decision knows its *role* (what the choice changes: an op, an input, a width, a depth,
a kernel size …) and where it sits: ``stage`` / ``block`` / ``layer`` indices of a network,
the ``cell`` kind and ``block`` of a cell space, the ``slot`` (operand ``"a"`` / ``"b"``)
within a cell block. The DSL sets it (``SpaceBuilder.scope`` and the ``role=`` keyword of
every choice point); it is stored on :class:`~nasir.space.Decision`, serialised with the
space, and printed by ``nasir show`` / ``nasir spaces --json``. Strategies group and find
decisions with :func:`groups` and :func:`positions` instead of parsing labels.

>>> m = DecisionMeta(role="kernel", block=3)
>>> m.to_json(), DecisionMeta.from_json(m.to_json()) == m
({'role': 'kernel', 'block': 3}, True)
>>> m.text()
'{role="kernel", block=3}'
>>> DecisionMeta(role="colour")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nasir.errors.SpecError: unknown decision role 'colour'
  fix:   use one of op, input, depth, width, kernel, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from nasir.errors import ParseError, SpecError
from nasir.printer import format_value

if TYPE_CHECKING:
    from nasir.space import Decision

__all__ = ["INDEX_FIELDS", "ROLES", "DecisionMeta", "default_role", "groups", "positions"]

#: what a decision changes. ``op``/``input``/``depth`` are the defaults of op, input and
#: depth choices; a value choice says what its value is (``width`` = channels or units,
#: ``expansion`` = an inverted bottleneck's ratio, ``se`` = squeeze-excite ratio, ``count``
#: = how many blocks a cell builds, ``keep`` = which states a cell outputs, ``next`` = what
#: a layer walk does after a layer).
ROLES = ("op", "input", "depth", "width", "kernel", "expansion", "se", "skip", "stride",
         "activation", "pool", "combine", "count", "keep", "units", "next")
#: the position fields (ints, except ``cell`` and ``slot``, which are names)
INDEX_FIELDS = ("stage", "block", "layer", "cell", "slot")
_STR_FIELDS = ("role", "cell", "slot")


def default_role(kind: str) -> str | None:
    """The role a decision of ``kind`` has when the DSL is told none (value: unknown).

    >>> default_role("op"), default_role("value")
    ('op', None)
    """
    return kind if kind in ("op", "input", "depth") else None


def _tuple(v: Any, depth: int = 0) -> Any:
    """Lists as tuples, nested; metadata is at most a list of triples, so anything nested
    deeper than a few levels is refused (a crafted file would otherwise recurse to a
    ``RecursionError``)."""
    if not isinstance(v, list | tuple):
        return v
    if depth >= 4:
        raise SpecError("decision metadata is nested too deeply",
                        hint="windows is a list of [option, kernel, stride] triples")
    return tuple(_tuple(x, depth + 1) for x in v)


@dataclass(frozen=True)
class DecisionMeta:
    """Role and position of a decision (``None``: unknown or not applicable).

    ``windows``: for a ``pool`` decision, ``(option, kernel, stride)`` of every option that
    pools (the others leave the size alone) — what a strategy needs to track the
    representation size without knowing the space.
    """

    role: str | None = None
    stage: int | None = None
    block: int | None = None
    layer: int | None = None
    cell: str | None = None
    slot: str | None = None
    windows: tuple = ()

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise SpecError(f"unknown decision role {self.role!r}",
                            hint=f"use one of {', '.join(ROLES)}")
        for f in INDEX_FIELDS:
            v = getattr(self, f)
            want = str if f in _STR_FIELDS else int
            if v is not None and (isinstance(v, bool) or not isinstance(v, want)):
                raise SpecError(f"decision metadata {f} must be {want.__name__}, got {v!r}")
        w = _tuple(self.windows)
        if not isinstance(w, tuple) or any(
                not isinstance(x, tuple) or len(x) != 3 or not all(
                    isinstance(k, int) and not isinstance(k, bool) for k in x[1:])
                for x in w):
            raise SpecError(f"decision metadata windows must be (option, kernel, stride) "
                            f"triples, got {self.windows!r}")
        object.__setattr__(self, "windows", w)

    def window(self, option: Any) -> tuple[int, int] | None:
        """``(kernel, stride)`` of a pooling option, ``None`` for one that does not pool.

        >>> DecisionMeta(role="pool", windows=(("p2", 2, 2),)).window("p2")
        (2, 2)
        """
        for o, k, s in self.windows:
            if o == option:
                return (k, s)
        return None

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (``{}`` when nothing is known)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v != ():
                out[f.name] = [list(x) for x in v] if f.name == "windows" else v
        return out

    def text(self) -> str:
        """Text form ``{role="op", block=2}`` (what the space's text form prints)."""
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in self.to_json().items()) + "}"

    @staticmethod
    def from_json(obj: Any, where: str = "meta") -> DecisionMeta:
        """Read :meth:`to_json`'s form; unknown keys are a ``ParseError``."""
        if not isinstance(obj, Mapping):
            raise ParseError("decision metadata must be an object", where=where)
        known = {f.name for f in fields(DecisionMeta)}
        bad = sorted(set(obj) - known)
        if bad:
            raise ParseError(f"unknown decision metadata {bad[0]!r}", where=f"{where}.{bad[0]}",
                             hint=f"known: {', '.join(sorted(known))}")
        try:
            return DecisionMeta(**{k: _tuple(v) for k, v in obj.items()})
        except SpecError as e:
            raise ParseError(e.message, where=where, hint=e.hint) from None

    def merged(self, other: DecisionMeta) -> DecisionMeta:
        """``other``'s set fields over this one's."""
        return DecisionMeta(**{**self.to_json(), **other.to_json()})


def positions(decisions: Sequence[Decision], **where: Any) -> list[int]:
    """Schema positions of the decisions whose metadata has every given field value;
    a value of ``...`` means "set to anything".

    >>> from nasir.spaces import get_space
    >>> sp = get_space("darts")
    >>> [sp.decisions[k].label for k in positions(sp.decisions, cell="normal", block=0)]
    ['normal_b0_in_a', 'normal_b0_op_a', 'normal_b0_in_b', 'normal_b0_op_b']
    """
    for k in where:
        if k not in {f.name for f in fields(DecisionMeta)}:
            raise SpecError(f"decisions have no metadata field {k!r}",
                            hint=f"fields: role, windows, {', '.join(INDEX_FIELDS)}")
    out = []
    for i, d in enumerate(decisions):
        m = d.meta
        if all((getattr(m, k) is not None) if v is ... else getattr(m, k) == v
               for k, v in where.items()):
            out.append(i)
    return out


def groups(decisions: Sequence[Decision], by: str, within: Iterable[int] | None = None
           ) -> dict[Any, list[int]]:
    """Schema positions grouped by the metadata field ``by`` (decisions without it are left
    out), keys sorted, positions in schema order; ``within`` restricts to those positions.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("pnas", progressive=False)
    >>> g = groups(sp.decisions, "block", positions(sp.decisions, cell=...))
    >>> sorted(g)[:2], len(g[0])
    ([0, 1], 4)
    """
    keep = set(range(len(decisions)) if within is None else within)
    out: dict[Any, list[int]] = {}
    for i, d in enumerate(decisions):
        v = getattr(d.meta, by)
        if i in keep and v is not None:
            out.setdefault(v, []).append(i)
    return {k: out[k] for k in sorted(out)}
