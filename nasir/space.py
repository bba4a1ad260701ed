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
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nasir.decision_meta import DecisionMeta
from nasir.errors import AssignmentError, NasirError, ParseError, SpecError, located
from nasir.graph import Graph, Node
from nasir.interpret import ActiveDecisions, Instantiator
from nasir.ops.control import RepeatOp
from nasir.schema import DECISION_KINDS, Assignment, Constraint, Decision, FrozenDict
from nasir.serialize import graph_from_json, graph_to_json
from nasir.space_printer import print_space

__all__ = ["DECISION_KINDS", "Assignment", "Constraint", "Decision", "DecisionMeta",
           "FrozenDict", "Space"]

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
        inst = Instantiator(self, a, g)
        g.set_output(inst.run())
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
        a = assignment if self.owns(assignment) else self.check(assignment)
        return ActiveDecisions(self, a).run()

    # -- forms -----------------------------------------------------------------------
    def to_json(self) -> dict:
        """JSON form (read back by :meth:`from_json`)."""
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


def dumps_assignment(a: Mapping[str, Any]) -> str:
    """Compact JSON of an assignment (stable key order)."""
    return json.dumps(Assignment(a).to_json(), sort_keys=True)
