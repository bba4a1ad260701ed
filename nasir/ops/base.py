"""Op declarations: a class per op with typed attributes, a verify hook and a registry.

An op is a frozen dataclass. Attribute values may be :class:`Ref` while the op sits in a
search space (a value choice); instantiation replaces every ``Ref`` with the assigned value.

>>> from nasir.ops import Conv2dOp
>>> from nasir.types import TensorType
>>> Conv2dOp(out_channels=8, kernel=3, stride=2).infer((TensorType((3, 32, 32)),))
f32[8,16,16]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from nasir.errors import NasirError, ParseError, SpecError, VerifyError
from nasir.types import TensorType

__all__ = [
    "OPS",
    "CompositeOp",
    "Op",
    "Ref",
    "concrete",
    "get_op",
    "has_refs",
    "make_op",
    "register_op",
    "resolve_refs",
]


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a decision of the space: the attribute takes the decision's value.

    >>> str(Ref("b1_kernel"))
    '$b1_kernel'
    """

    label: str

    def __str__(self) -> str:
        return f"${self.label}"


_T = TypeVar("_T")


def concrete(v: _T | Ref) -> _T:
    """An attribute's value with its :class:`Ref` ruled out.

    Only ``__post_init__`` sees unresolved refs: ``check`` runs when there are none,
    ``verify`` skips ops that still have some, and ``infer`` / ``params`` / ``macs`` /
    ``lower`` run on typed (hence resolved) ops. The hooks read ``int | Ref`` fields through
    this, so the type says ``int`` and a broken invariant is a clear error, not a
    ``TypeError`` from ``Ref % int``.

    >>> concrete(3)
    3
    >>> concrete(Ref("k"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    nasir.errors.VerifyError: unresolved value choice $k where a value is needed...
    """
    if isinstance(v, Ref):
        raise VerifyError(f"unresolved value choice {v} where a value is needed",
                          hint="instantiate the space (space.instantiate) before typing or "
                               "lowering its ops")
    return v


OPS: dict[str, type[Op]] = {}


_O = TypeVar("_O", bound="Op")


def register_op(cls: type[_O]) -> type[_O]:
    """Class decorator: add an op class to the registry under its ``name``."""
    if cls.name in OPS and OPS[cls.name] is not cls:
        raise SpecError(f"op name {cls.name!r} registered twice")
    OPS[cls.name] = cls
    # replaces the field hash each @dataclass(frozen=True) generates: a deliberate patch of
    # a method, which is what mypy's method-assign check exists to flag
    cls.__hash__ = _cached_hash  # type: ignore[method-assign,assignment]
    return cls


def _cached_hash(op: Op) -> int:
    # ops are immutable and hashed often (caches keyed by op): compute the hash once
    h = op.__dict__.get("_hv")
    if h is None:
        h = hash((type(op), *(getattr(op, f.name) for f in dataclasses.fields(op))))
        object.__setattr__(op, "_hv", h)
    return h


def get_op(name: str) -> type[Op]:
    """Look up an op class by name, or raise a :class:`SpecError` listing the known ops."""
    try:
        return OPS[name]
    except KeyError:
        known = ", ".join(sorted(OPS))
        raise SpecError(f"unknown op {name!r}",
                        hint=f"known ops: {known} (a user op is known once the module "
                             "declaring it with user_op is imported)") from None


def make_op(name: str, attrs: dict[str, Any], where: str) -> Op:
    """Build an op from its name and attribute dict, with clear errors for bad attributes."""
    cls = get_op(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(attrs) - known)
    if unknown:
        raise ParseError(
            f"op {name} has no attribute(s) {', '.join(unknown)}",
            where=where,
            hint=f"{name} takes: {', '.join(sorted(known)) or 'no attributes'}",
        )
    try:
        return cls(**attrs)
    except NasirError as e:
        e.where = e.where or where
        raise type(e)(e.message, where=where, hint=e.hint) from None
    except TypeError as e:
        raise ParseError(f"bad attributes for {name}: {e}", where=where) from None


def _is_ref(v: object) -> bool:
    return isinstance(v, Ref)


@dataclass(frozen=True)
class Op:
    """Base of all ops. Subclasses declare ``name``, ``arity`` and attribute fields.

    ``arity`` is the number of inputs, or ``-1`` for two or more (add, concat).
    """

    name: ClassVar[str] = "op"
    arity: ClassVar[int] = 1
    composite: ClassVar[bool] = False
    #: ops with ``zero_preserving`` map an all-zero input to an all-zero output
    zero_preserving: ClassVar[bool] = False
    #: choice points and region arguments: they exist only in a space's body, have no type
    #: and cannot be lowered (an instantiated graph has none)
    space_only: ClassVar[bool] = False
    #: ops whose inputs can be reordered without changing the result
    commutative: ClassVar[bool] = False

    def __post_init__(self) -> None:
        refs = _scan_refs(self)
        object.__setattr__(self, "_refs", refs)
        if not refs:
            self.check()

    def signature(self) -> str:
        """Op name and every attribute, as one string (cached; used by hashing)."""
        sig = self.__dict__.get("_sig")
        if sig is None:
            parts = [self.name]
            for f in dataclasses.fields(self):
                parts.append(f"{f.name}={getattr(self, f.name)!r}")
            sig = ",".join(parts)
            object.__setattr__(self, "_sig", sig)
        return sig

    # -- hooks -----------------------------------------------------------------------
    def check(self) -> None:
        """Validate attribute values (called on creation when no attribute is a Ref)."""

    def infer(self, ins: tuple[TensorType, ...]) -> TensorType:
        """Return the output type for the given input types or raise ``VerifyError``."""
        raise NotImplementedError

    def params(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        """Number of trainable parameters."""
        return 0

    def macs(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        """Multiply-accumulates of conv and linear layers, per sample."""
        return 0

    # -- helpers ---------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """Attribute values in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _bad(self, field: str, msg: str, hint: str | None = None) -> SpecError:
        return SpecError(f"{self.name}: attribute {field} {msg}", hint=hint)

    def _pos_int(self, field: str, minimum: int = 1) -> None:
        v = getattr(self, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self._bad(field, f"must be an int >= {minimum}, got {v!r}")

    def _choice(self, field: str, options: tuple) -> None:
        v = getattr(self, field)
        if v not in options:
            raise self._bad(field, f"must be one of {list(options)}, got {v!r}")

    def _fail(self, msg: str, ins: tuple[TensorType, ...], hint: str | None = None) -> VerifyError:
        got = ", ".join(str(t) for t in ins)
        return VerifyError(f"{self.name}: {msg} (inputs: {got})", hint=hint)

    def _want_rank(self, ins: tuple[TensorType, ...], rank: int) -> TensorType:
        t = ins[0]
        if t.rank != rank:
            what = "a feature map C×H×W" if rank == 3 else "a vector"
            raise self._fail(
                f"expects {what} (rank {rank}), got rank {t.rank}",
                ins,
                hint="insert flatten before linear layers" if rank == 1 else None,
            )
        return t


@dataclass(frozen=True)
class CompositeOp(Op):
    """An op that the ``expand-composites`` pass lowers into primitive ops."""

    composite: ClassVar[bool] = True

    def lower(self, emit: Any, x: Any) -> Any:
        """Emit the primitive ops through ``emit(op, *inputs)`` and return the output.

        ``emit`` also exposes ``emit.type(value)`` for the inferred type of a value.
        """
        raise NotImplementedError

    def infer(self, ins: tuple[TensorType, ...]) -> TensorType:
        from nasir.ops.expansion import infer_composite

        return infer_composite(self, ins)

    def params(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        from nasir.ops.expansion import count_composite

        return count_composite(self, ins)[0]

    def macs(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        from nasir.ops.expansion import count_composite

        return count_composite(self, ins)[1]


def has_refs(op: Op) -> bool:
    """True if any attribute of ``op`` is an unresolved :class:`Ref`."""
    r = op.__dict__.get("_refs")
    return _scan_refs(op) if r is None else r


def _scan_refs(op: Op) -> bool:
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if isinstance(v, Ref) or (isinstance(v, tuple) and any(_is_ref(x) for x in v)):
            return True
    return False


def resolve_refs(op: Op, values: dict[str, Any]) -> Op:
    """Return ``op`` with every ``Ref`` replaced by ``values[label]``."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if isinstance(v, Ref):
            changes[f.name] = values[v.label]
        elif isinstance(v, tuple) and any(_is_ref(x) for x in v):
            changes[f.name] = tuple(values[x.label] if _is_ref(x) else x for x in v)
    if not changes:
        return op
    return dataclasses.replace(op, **changes)
