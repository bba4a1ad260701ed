"""Search spaces: a graph IR with choice points, a decision schema, and assignments.

A :class:`Space` holds a body graph whose ``choose`` / ``repeat`` / ``select`` nodes and
``$label`` attributes are its choice points, the ordered decision schema, named reference
architectures and constraints. ``instantiate`` turns an assignment into a concrete graph.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> len(sp.decisions), sp.size
(6, 15625)
>>> g = sp.instantiate(sp.reference("resnet"))
>>> sorted(g.active_decisions)[:2]
['edge_0_1', 'edge_0_2']
"""

from __future__ import annotations

import itertools
import json
import math
import reprlib
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nasir.decision_meta import DecisionMeta, default_role
from nasir.errors import AssignmentError, NasirError, ParseError, SpecError, located
from nasir.graph import Graph, Node
from nasir.loc import SourceLoc
from nasir.ops import AddOp, ConcatOp, Op, has_refs, resolve_refs
from nasir.ops.control import RepeatOp

__all__ = ["DECISION_KINDS", "Assignment", "Constraint", "Decision", "DecisionMeta", "Space"]

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
        from nasir.text import format_value

        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in self._values.items()) + "}"

    @staticmethod
    def parse(text: str) -> Assignment:
        """Read the text form."""
        from nasir.text import Lexer, parse_attrs

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

    >>> d = FrozenDict({"a": 1})
    >>> d["a"], json.dumps(d)
    (1, '{"a": 1}')
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this mapping belongs to a built space and cannot be changed; "
                        "copy it with dict(...) first")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]


class Space:
    """A search space. Build one with :mod:`nasir.dsl`; see the module docstring."""

    def __init__(
        self,
        name: str,
        body: Graph,
        decisions: tuple[Decision, ...],
        references: Mapping[str, Mapping[str, Any]] | None = None,
        constraints: tuple[Constraint, ...] = (),
        meta: Mapping[str, Any] | None = None,
        view: Space | None = None,
    ) -> None:
        self.name = name
        self.body = body
        self.decisions = tuple(decisions)
        self._by_label = {d.label: d for d in self.decisions}
        if len(self._by_label) != len(self.decisions):
            raise SpecError(f"space {name} lists a decision label twice")
        self.constraints = tuple(constraints)
        self.meta: Mapping[str, Any] = FrozenDict(meta or {})
        #: marks the assignments this space checked; never reused by another space (a uuid,
        #: not ``id()``, which a later object may get once this one is gone)
        self._token = uuid.uuid4().int
        self._memo: dict[str, Any] = {}
        refs: dict[str, Assignment] = {}
        for rname, vals in (references or {}).items():
            refs[rname] = self.check(vals, where=f"reference {rname}")
        self.references: Mapping[str, Assignment] = FrozenDict(refs)
        if view is not None and [d.label for d in view.decisions] != list(self._by_label):
            raise SpecError(f"the view of space {name} must have the same decisions",
                            hint="a view is the part of the space every decision lives in")
        #: a smaller space with the same decisions whose graph determines the architecture
        #: (NB201: one cell); hashing and cell encodings instantiate it instead of the body
        self.view = view
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise NasirError(f"space {self.name} is immutable once built: cannot set {name}",
                             where=f"space {self.name}",
                             hint="build a new space (nasir.dsl, Space(...) or "
                                  "Space.from_json) with the change instead")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise NasirError(f"space {self.name} is immutable once built: cannot delete {name}",
                         where=f"space {self.name}")

    def memo(self, key: str, build: Callable[[], Any]) -> Any:
        """A value derived from this (immutable) space, computed once by ``build()`` and
        kept under ``key`` — how analyses of the schema cache their results.

        >>> from nasir.spaces import get_space
        >>> sp = get_space("nb201")
        >>> sp.memo("n_ops", lambda: len(sp.decisions)), sp.memo("n_ops", lambda: 0)
        (6, 6)
        """
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value

    def owns(self, assignment: Mapping[str, Any]) -> bool:
        """Whether ``assignment`` is an :class:`Assignment` that this space checked (so it
        needs no checking again).

        >>> from nasir.spaces import get_space
        >>> sp = get_space("nb201")
        >>> sp.owns(sp.reference("resnet")), sp.owns(dict(sp.reference("resnet")))
        (True, False)
        """
        return isinstance(assignment, Assignment) and assignment._space == self._token

    # -- schema ----------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of distinct architectures as genotypes: assignments counted up to their
        inactive decisions (a decision inside an unchosen branch or an unused repetition
        does not multiply). Computed once by a recursion over the body's structure (see
        :mod:`nasir.space_count`), not by enumeration; constraints and type errors are
        not taken into account. :attr:`raw_size` is the product of all domain sizes.

        >>> from nasir.spaces import get_space
        >>> sp = get_space("metaqnn")
        >>> sp.size < sp.raw_size
        True
        """
        from nasir.space_count import count_active

        return int(self.memo("size", lambda: count_active(self)))

    @property
    def raw_size(self) -> int:
        """Number of assignments: the product of the domain sizes (what :meth:`enumerate`
        walks and :meth:`from_indices` indexes)."""
        return math.prod(d.size for d in self.decisions)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample shape of the space's (first) input, ``None`` if it has none.

        >>> from nasir.spaces import get_space
        >>> get_space("nb201", input_shape=(1, 8, 8)).input_shape
        (1, 8, 8)
        """
        ins = self.body.inputs
        shape = getattr(ins[0].op, "shape", None) if ins else None
        return None if shape is None else tuple(int(v) for v in shape)

    def decision(self, label: str) -> Decision:
        """The decision called ``label``."""
        try:
            return self._by_label[label]
        except KeyError:
            raise AssignmentError(f"space {self.name} has no decision {label!r}",
                                  hint=f"decisions: {', '.join(self._by_label)}") from None

    def check(self, values: Mapping[str, Any], where: str = "assignment") -> Assignment:
        """Validate ``values`` against the schema and return a normalised assignment.

        Missing labels are allowed only for decisions the assignment leaves inactive;
        instantiation reports a missing active one.
        """
        if not isinstance(values, Mapping):
            raise AssignmentError(f"{where} must be a mapping of decision labels to values",
                                  where=where)
        out: dict[str, Any] = {}
        for k, v in values.items():
            d = self._by_label.get(k) if isinstance(k, str) else None
            if d is None:
                raise AssignmentError(
                    f"{where} sets unknown decision {k!r} of space {self.name}",
                    where=f"{where}[{k!r}]",
                    hint=f"decisions: {', '.join(self._by_label)}",
                )
            out[k] = d.options[d.index(v)]
        a = Assignment(out, getattr(values, "provenance", None))
        a._space = self._token
        return a

    def reference(self, name: str) -> Assignment:
        """The named reference architecture."""
        try:
            return self.references[name]
        except KeyError:
            refs = ", ".join(self.references) or "none"
            raise AssignmentError(f"space {self.name} has no reference {name!r}",
                                  hint=f"references: {refs}") from None

    def indices(self, a: Mapping[str, Any]) -> list[int]:
        """Option indices in schema order (missing decisions give 0)."""
        return [d.index(a[d.label]) if d.label in a else 0 for d in self.decisions]

    def from_indices(self, idx: Any, provenance: dict | None = None) -> Assignment:
        """The assignment with the given option index per decision."""
        a = Assignment.__new__(Assignment)
        a._values = {d.label: d.options[i] for d, i in zip(self.decisions, idx.tolist()
                                                          if hasattr(idx, "tolist") else idx)}
        a._hash = None
        a.provenance = provenance or {}
        a._space = self._token
        return a

    def enumerate(self) -> Iterator[Assignment]:
        """Every assignment, in schema order (only sensible for small spaces)."""
        for combo in itertools.product(*(range(d.size) for d in self.decisions)):
            yield self.from_indices(combo)

    # -- instantiation ---------------------------------------------------------------
    def instantiate(self, assignment: Mapping[str, Any], *, checked: bool = False) -> Graph:
        """Build the concrete graph for ``assignment``.

        The graph gets ``active_decisions``: the labels that shaped it.
        """
        if isinstance(assignment, Assignment) and (checked or self.owns(assignment)):
            a = assignment
        else:
            a = self.check(assignment)
        g = Graph(self.name)
        inst = _Instantiator(self, a, g)
        out = inst.region(self.body, [])
        g.set_output(out)
        g.active_decisions = inst.active
        return g

    def hash_view(self, assignment: Mapping[str, Any]) -> Graph:
        """The graph that identifies ``assignment``'s architecture: the :attr:`view`'s
        instance when the space has one, else the whole network."""
        if self.view is None:
            return self.instantiate(assignment)
        return self.view.instantiate(assignment if self.owns(assignment)
                                     else self.check(assignment), checked=True)

    def active(self, assignment: Mapping[str, Any]) -> set[str]:
        """Labels of the decisions that ``assignment`` actually uses."""
        return self.instantiate(assignment).active_decisions or set()

    # -- forms -----------------------------------------------------------------------
    def to_json(self) -> dict:
        """JSON form (read back by :meth:`from_json`)."""
        from nasir.serialize import graph_to_json

        return {
            "name": self.name,
            "decisions": [d.to_json() for d in self.decisions],
            "references": {k: v.to_json() for k, v in self.references.items()},
            "constraints": [{"metric": c.metric, "max": c.max} for c in self.constraints],
            "meta": dict(self.meta),
            "body": graph_to_json(self.body),
        }

    @staticmethod
    def from_json(obj: Any) -> Space:
        """Read the JSON form; errors name the JSON path."""
        from nasir.serialize import graph_from_json

        if not isinstance(obj, dict):
            raise ParseError("a space must be a JSON object", where="$")
        decs = obj.get("decisions")
        if not isinstance(decs, list):
            raise ParseError("a space needs a decisions list", where="$.decisions")
        decisions = []
        for i, d in enumerate(decs):
            try:
                decisions.append(Decision.from_json(d, f"$.decisions[{i}]"))
            except NasirError as e:
                raise located(e, f"$.decisions[{i}]") from None
        cons = []
        if not isinstance(obj.get("constraints", []), list):
            raise ParseError("constraints must be a list", where="$.constraints")
        for i, c in enumerate(obj.get("constraints", [])):
            if not isinstance(c, dict) or not isinstance(c.get("max"), int | float):
                raise ParseError("a constraint needs metric and max", where=f"$.constraints[{i}]")
            if not isinstance(c.get("metric"), str):
                raise ParseError("a constraint's metric must be a string",
                                 where=f"$.constraints[{i}].metric")
            cons.append(Constraint(c["metric"], float(c["max"])))
        refs = obj.get("references", {})
        if not isinstance(refs, dict):
            raise ParseError("references must be an object", where="$.references")
        if not isinstance(obj.get("meta") or {}, dict):
            raise ParseError("meta must be an object", where="$.meta")
        body = graph_from_json(obj.get("body"), "$.body")
        try:
            sp = Space(str(obj.get("name", "space")), body, tuple(decisions), refs, tuple(cons),
                       obj.get("meta") or {})
            sp.validate()
        except NasirError as e:
            raise located(e, "$") from None
        return sp

    def validate(self) -> None:
        """Check that every choice point in the body names a decision of the right kind."""
        used = _labels_used(self.body)
        for label, kind, node in used:
            d = self._by_label.get(label)
            if d is None:
                raise SpecError(f"node %{node.name} refers to undeclared decision {label!r}",
                                where=f"%{node.name} ({node.op.name})", loc=node.loc)
            if kind and d.kind != kind:
                raise SpecError(f"decision {label} is a {d.kind} decision but %{node.name} "
                                f"uses it as {kind}", loc=node.loc)
            if kind == "op":
                missing = [o for o in d.options if o not in (node.regions or {})]
                if missing:
                    raise SpecError(f"choose %{node.name} has no region for option {missing[0]!r}",
                                    where=label, loc=node.loc)
            if kind == "depth":
                _check_repeat_regions(node, d)

    def text(self) -> str:
        """Text form (parsed back by :func:`nasir.space_text.parse_space`)."""
        from nasir.space_text import print_space

        return print_space(self)

    def __repr__(self) -> str:
        return f"<Space {self.name}: {len(self.decisions)} decisions, size {self.size}>"


def _check_repeat_regions(node: Node, d: Decision) -> None:
    """A repeat has ``first`` (and maybe ``rest``), or one region per index up to its
    largest count, keyed ``"0"``, ``"1"``, …"""
    keys = set(node.regions or {})
    if not RepeatOp.indexed(keys):
        want = "'first' and optionally 'rest'"
        ok = keys <= {"first", "rest"}
    else:
        top = max((o for o in d.options if isinstance(o, int)), default=0)
        want = f"one per repetition index, '0' to '{top - 1}'" if top else "none"
        ok = keys == {str(i) for i in range(top)}
    if not ok:
        raise SpecError(f"repeat %{node.name} has regions {sorted(keys)}; it needs {want}",
                        where=d.label, loc=node.loc)


def _labels_used(g: Graph) -> list[tuple[str, str, Node]]:
    from nasir.ops.base import Ref
    from nasir.ops.control import ChooseOp, RepeatOp, SelectOp

    out: list[tuple[str, str, Node]] = []
    for n in g.nodes():
        op = n.op
        if isinstance(op, ChooseOp):
            out.append((op.label, "op", n))
        elif isinstance(op, RepeatOp):
            out.append((op.label, "depth", n))
        elif isinstance(op, SelectOp):
            out.append((op.label, "input", n))
        else:
            for v in op.attrs().values():
                if isinstance(v, Ref):
                    out.append((v.label, "", n))
        for r in (n.regions or {}).values():
            out.extend(_labels_used(r))
    return out


_K_ARG, _K_CHOOSE, _K_REPEAT, _K_SELECT, _K_REFS, _K_INPUT, _K_OP = range(7)


def _ref_labels(op: Op) -> tuple[str, ...]:
    out: list[str] = []
    for v in op.attrs().values():
        for x in v if isinstance(v, tuple) else (v,):
            label = getattr(x, "label", None)
            if isinstance(label, str) and label not in out:
                out.append(label)
    return tuple(out)


#: region → (its version when planned, the plan); a region changed since is planned again
_PLANS: weakref.WeakKeyDictionary[Graph, tuple[int, tuple[list[tuple], int]]] = \
    weakref.WeakKeyDictionary()


def _plan(r: Graph) -> tuple[list[tuple], int]:
    """A flat, cached recipe of a region: one tuple per node, inputs as positions."""
    cached = _PLANS.get(r)
    if cached is not None and cached[0] == r.version:
        return cached[1]
    nodes = r.nodes()
    pos = {n: k for k, n in enumerate(nodes)}
    steps = []
    for n in nodes:
        op = n.op
        ins = tuple(pos[i] for i in n.inputs)
        name = op.name
        if name == "arg":
            steps.append((_K_ARG, n, op.index, ins))  # type: ignore[attr-defined]
        elif name == "choose":
            steps.append((_K_CHOOSE, n, op, ins))
        elif name == "repeat":
            steps.append((_K_REPEAT, n, op, ins))
        elif name == "select":
            steps.append((_K_SELECT, n, op, ins))
        elif has_refs(op):
            steps.append((_K_REFS, n, (op, _ref_labels(op), {}), ins))
        elif name == "input":
            steps.append((_K_INPUT, n, op, ins))
        else:
            steps.append((_K_OP, n, op, ins))
    result = (steps, pos[r.output])
    _PLANS[r] = (r.version, result)
    return result


class _Instantiator:
    def __init__(self, space: Space, a: Assignment, g: Graph) -> None:
        self.space = space
        self.a = a._values
        self.g = g
        self.active: set[str] = set()

    def value(self, label: str, node: Node) -> Any:
        self.active.add(label)
        try:
            return self.a[label]
        except KeyError:
            d = self.space._by_label.get(label)
            raise AssignmentError(
                f"assignment leaves out decision {label!r}, which this architecture uses",
                where=f"%{node.name} ({node.op.name})",
                loc=node.loc,
                hint=f"give {label} one of {list(d.options) if d else '?'}",
            ) from None

    def region(self, r: Graph, args: list[Node]) -> Node:
        steps, out = _plan(r)
        vals: list[Node] = []
        g = self.g
        a = self.a
        for kind, n, op, ins in steps:
            if kind == _K_OP:
                vals.append(g.append_trusted(op, tuple([vals[i] for i in ins]), n.loc))
            elif kind == _K_ARG:
                vals.append(args[op])
            elif kind == _K_CHOOSE and op.label in a:
                self.active.add(op.label)
                vals.append(self.region(n.regions[a[op.label]], [vals[i] for i in ins]))
            else:
                vals.append(self.special(kind, n, op, [vals[i] for i in ins]))
        return vals[out]

    def special(self, kind: int, n: Node, op: Any, ins: list[Node]) -> Node:
        if kind == _K_CHOOSE:
            return self.region(n.regions[self.value(op.label, n)], ins)  # type: ignore[index]
        if kind == _K_REFS:
            base, labels, cache = op
            key = tuple(self.value(lb, n) for lb in labels)
            resolved = cache.get(key)
            if resolved is None:
                try:
                    resolved = resolve_refs(base, dict(zip(labels, key)))
                except NasirError as e:
                    raise SpecError(f"{e.message} (after choosing {dict(zip(labels, key))})",
                                    where=f"%{n.name}", loc=n.loc, hint=e.hint) from None
                cache[key] = resolved
            return self.g.append_trusted(resolved, tuple(ins), n.loc)
        if kind == _K_INPUT:
            return self.g.add(op, ins, name=n.name, loc=n.loc)
        if kind == _K_REPEAT:
            count = self.value(op.label, n)
            x = ins[0]
            regions = n.regions or {}
            for i in range(count):
                x = self.region(RepeatOp.region_for(regions, i), [x])
            return x
        v = self.value(op.label, n)
        idx = (v,) if isinstance(v, int) else v
        for i in idx:
            if not 0 <= i < len(ins):
                raise AssignmentError(f"input choice {op.label} picks #{i} of "
                                      f"{len(ins)} candidates", loc=n.loc)
        chosen = [ins[i] for i in idx]
        if len(chosen) == 1:
            return chosen[0]
        red: Op = AddOp() if op.reduce == "add" else ConcatOp()
        if op.reduce == "pad_concat":
            from nasir.ops.pad import PadConcatOp

            red = PadConcatOp()
        return self.g.add(red, chosen, loc=n.loc)


def dumps_assignment(a: Mapping[str, Any]) -> str:
    """Compact JSON of an assignment (stable key order)."""
    return json.dumps(Assignment(a).to_json(), sort_keys=True)
