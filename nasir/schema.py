"""The decision schema of a search space: decisions, constraints and assignments.

A :class:`Decision` is one choice point's label, kind and options; an :class:`Assignment`
maps decision labels to chosen values (the genotype); a :class:`Constraint` bounds a metric
of instantiated graphs. :class:`~nasir.space.Space` (which re-exports these names) holds
them with its body graph.

>>> d = Decision("k", "value", (3, 5))
>>> d.index(5), Assignment({"k": 5}) == {"k": 5}
(1, True)
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nasir.decision_meta import DecisionMeta, default_role
from nasir.errors import AssignmentError, ParseError, SpecError
from nasir.loc import SourceLoc
from nasir.printer import format_value
from nasir.text import Lexer, parse_attrs

__all__ = ["DECISION_KINDS", "Assignment", "Constraint", "Decision", "FrozenDict"]

DECISION_KINDS = ("op", "value", "depth", "input")


def _key(v: Any) -> tuple:
    return (type(v) is bool, v)


def _norm(v: Any, _depth: int = 0) -> Any:
    if isinstance(v, list):
        if _depth > 64:
            raise SpecError("value nested deeper than 64 lists")
        return tuple(_norm(x, _depth + 1) for x in v)
    return v


@dataclass(frozen=True)
class Decision:
    """One choice point: a label, a kind (op / value / depth / input), its options and its
    :class:`~nasir.decision_meta.DecisionMeta` (role, block, cell …; an op, input or depth
    decision's role defaults to its kind).

    >>> d = Decision("b1_kernel", "value", (3, 5), meta=DecisionMeta(role="kernel", block=1))
    >>> d.index(5), d.size, d.meta.role, d.meta.block
    (1, 2, 'kernel', 1)
    >>> Decision("b1_op", "op", ("a", "b")).meta.role
    'op'
    """

    label: str
    kind: str
    options: tuple
    loc: SourceLoc | None = field(default=None, compare=False)
    meta: DecisionMeta = field(default_factory=DecisionMeta)
    _lookup: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, DecisionMeta):
            raise SpecError(f"decision {self.label}: meta must be a DecisionMeta, "
                            f"got {type(self.meta).__name__}", loc=self.loc)
        if self.meta.role is None and default_role(self.kind) is not None:
            object.__setattr__(self, "meta", self.meta.merged(
                DecisionMeta(role=default_role(self.kind))))
        if not self.label or not all(c.isalnum() or c in "_." for c in self.label):
            raise SpecError(f"bad decision label {self.label!r}", loc=self.loc,
                            hint="use letters, digits, '_' and '.'")
        if self.kind not in DECISION_KINDS:
            raise SpecError(f"unknown decision kind {self.kind!r}", where=self.label,
                            hint=f"use one of {', '.join(DECISION_KINDS)}")
        opts = tuple(_norm(o) for o in self.options)
        object.__setattr__(self, "options", opts)
        if not opts:
            raise SpecError(f"decision {self.label} has no options", loc=self.loc)
        for i, o in enumerate(opts):
            try:
                k = _key(o)
                hash(k)
            except TypeError:
                raise SpecError(f"option {o!r} of {self.label} is not a plain value",
                                loc=self.loc) from None
            if k in self._lookup:
                raise SpecError(f"decision {self.label} lists option {o!r} twice", loc=self.loc)
            self._lookup[k] = i

    @property
    def size(self) -> int:
        """Number of options."""
        return len(self.options)

    def index(self, value: Any) -> int:
        """Position of ``value`` in the options, or ``AssignmentError`` naming the domain."""
        try:
            return self._lookup[_key(_norm(value))]
        except (KeyError, TypeError, SpecError):
            raise AssignmentError(
                f"value {reprlib.repr(value)} is not in the domain of decision {self.label}",
                where=f"decision {self.label} ({self.kind})",
                loc=self.loc,
                hint=f"choose one of {list(self.options)}",
            ) from None

    def to_json(self) -> dict:
        """JSON form."""
        d: dict[str, Any] = {"label": self.label, "kind": self.kind,
                             "options": [list(o) if isinstance(o, tuple) else o
                                         for o in self.options]}
        if self.loc is not None:
            d["loc"] = str(self.loc)
        meta = self.meta.to_json()
        if meta:
            d["meta"] = meta
        return d

    @staticmethod
    def from_json(obj: Any, where: str = "decision") -> Decision:
        """Read the JSON form. A form saved before decisions had metadata loads with what
        the kind tells (an op / input / depth decision's role), the rest unknown."""
        if not isinstance(obj, dict) or not isinstance(obj.get("options"), list):
            raise ParseError("a decision needs label, kind and an options list", where=where)
        for key in ("label", "kind", "loc"):
            if not isinstance(obj.get(key, ""), str):
                raise ParseError(f"a decision's {key} must be a string", where=f"{where}.{key}")
        meta = DecisionMeta.from_json(obj.get("meta", {}), f"{where}.meta")
        return Decision(str(obj.get("label", "")), str(obj.get("kind", "")),
                        tuple(obj["options"]), SourceLoc.parse(str(obj.get("loc", ""))), meta)


@dataclass(frozen=True)
class Constraint:
    """An upper bound on a metric of instantiated graphs: ``macs``, ``params``, ``latency_ms``.

    >>> Constraint("macs", 3e8).ok({"macs": 2e8})
    True
    """

    metric: str
    max: float

    def ok(self, metrics: Mapping[str, float]) -> bool:
        """Whether ``metrics`` satisfies the bound."""
        return float(metrics[self.metric]) <= self.max

    def __str__(self) -> str:
        return f"{self.metric} <= {self.max:g}"


class Assignment(Mapping[str, Any]):
    """An immutable mapping decision label → chosen value (the genotype).

    ``provenance`` records how it was made (sampler, mutation: label, old and new value);
    it does not take part in equality or hashing.

    >>> a = Assignment({"k": 3}); a["k"], a == Assignment({"k": 3})
    (3, True)
    """

    __slots__ = ("_hash", "_space", "_values", "provenance")

    def __init__(self, values: Mapping[str, Any], provenance: dict | None = None) -> None:
        self._values = {k: _norm(v) for k, v in values.items()}
        self._hash: int | None = None
        self._space: int | None = None
        self.provenance = provenance or {}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(sorted((k, _key(v)) for k, v in self._values.items())))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Assignment):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    def replace(self, **changes: Any) -> Assignment:
        """A copy with some values changed."""
        vals = dict(self._values)
        vals.update(changes)
        return Assignment(vals)

    def to_json(self) -> dict:
        """JSON form: ``{label: value}`` with tuples as lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}

    def text(self) -> str:
        """Text form ``{a=1, b="x"}`` (parsed back by :meth:`parse`)."""
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in self._values.items()) + "}"

    @staticmethod
    def parse(text: str) -> Assignment:
        """Read the text form."""
        lx = Lexer(text, "<assignment>")
        vals = parse_attrs(lx)
        if lx.peek()[0] != "eof":
            raise lx.error("unexpected text after the assignment")
        return Assignment(vals)

    def __repr__(self) -> str:
        return f"Assignment({self.text()})"


class FrozenDict(dict):
    """A dict that refuses changes (a built :class:`Space`'s ``meta`` and ``references``);
    still a dict, so ``json.dumps`` and ``dict(...)`` take it as one.

    >>> import json
    >>> d = FrozenDict({"a": 1})
    >>> d["a"], json.dumps(d)
    (1, '{"a": 1}')
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this mapping belongs to a built space and cannot be changed; "
                        "copy it with dict(...) first")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
