"""The space interpreter: the one place that says what a choice point means.

A space's body is a graph whose ``choose`` / ``repeat`` / ``select`` nodes and ``$label``
fields are its choice points (:mod:`nasir.space`). :class:`SpaceInterpreter` runs a body for
one assignment — ``choose`` runs the region of the chosen option, ``repeat`` runs its
layer regions as many times as the chosen depth, ``select`` picks the chosen inputs (one,
or several reduced by add / concat / zero-padded concat), ``$label`` fields resolve to the
chosen values — and records which decisions the assignment actually used
(:attr:`~SpaceInterpreter.active`). What a *plain* op produces is left to subclasses, as
``torch.fx.Interpreter`` leaves ``call_function`` to its subclasses:

- :class:`Instantiator` builds the concrete graph (:meth:`Space.instantiate`); the export
  names (:func:`nasir.runtime.export_names.scoped_instantiate`) watch it build;
- :class:`ActiveDecisions` builds nothing and returns only the labels used (what mutation
  and :meth:`Space.active` ask; no graph is made);
- :class:`~nasir.interpret.mixed.MixedInterpreter` runs the body over *every* open option
  of each choice point instead of one, and lets its client mix them (the torch supernet's
  builder).

A subclass overrides :meth:`~SpaceInterpreter.op` (and, when its values are not graph
nodes, :meth:`~SpaceInterpreter.input` and :meth:`~SpaceInterpreter.reduce`).

>>> from nasir.spaces import get_space
>>> sp = get_space("tiny_mnasnet")
>>> a = sp.reference("small")
>>> sorted(ActiveDecisions(sp, a).run()) == sorted(sp.instantiate(a).active_decisions)
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nasir.errors import AssignmentError, NasirError, SpecError
from nasir.graph import Graph, Node
from nasir.ops import AddOp, ConcatOp, Op, has_refs, resolve_refs
from nasir.ops.control import RepeatOp

if TYPE_CHECKING:
    from nasir.space import Space

__all__ = ["ActiveDecisions", "Instantiator", "SpaceInterpreter", "picks", "reducer"]

V = TypeVar("V")

_K_ARG, _K_CHOOSE, _K_REPEAT, _K_SELECT, _K_REFS, _K_INPUT, _K_OP = range(7)

def _ref_labels(op: Op) -> tuple[str, ...]:
    out: list[str] = []
    for v in op.attrs().values():
        for x in v if isinstance(v, tuple) else (v,):
            label = getattr(x, "label", None)
            if isinstance(label, str) and label not in out:
                out.append(label)
    return tuple(out)


def picks(option: Any) -> tuple[int, ...]:
    """The operand positions an input choice's option picks (one index, or several).

    >>> picks(2), picks((0, 3))
    ((2,), (0, 3))
    """
    return (option,) if isinstance(option, int) else tuple(option)


def reducer(reduce: str) -> Op:
    """The op that combines several operands an input choice picks (its ``reduce``)."""
    if reduce == "pad_concat":
        from nasir.ops.pad import PadConcatOp

        return PadConcatOp()
    return AddOp() if reduce == "add" else ConcatOp()


_PLAN = "interpret.plan"


def _plan(r: Graph) -> tuple[list[tuple], int]:
    """A flat, cached recipe of a region: one tuple per node, inputs as positions."""
    cached = r.derived.get(_PLAN)
    if cached is not None:
        return cached
    nodes = r.nodes()
    pos = {n: k for k, n in enumerate(nodes)}
    steps = []
    for n in nodes:
        op: Any = n.op
        ins = tuple(pos[i] for i in n.inputs)
        name = op.name
        if name == "arg":
            steps.append((_K_ARG, n, op.index, ins))
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
    r.derived[_PLAN] = result
    return result


class SpaceInterpreter(Generic[V]):
    """Runs ``space``'s body for ``assignment`` (see the module docstring).

    ``assignment`` should be checked by the space (:meth:`Space.check`); a decision the run
    reaches but the assignment leaves out is an :class:`~nasir.errors.AssignmentError`
    naming the node and the source line.
    """

    def __init__(self, space: Space, assignment: Mapping[str, Any]) -> None:
        self.space = space
        values = getattr(assignment, "_values", None)  # an Assignment's own dict: no copy
        self.a: Mapping[str, Any] = values if isinstance(values, dict) else dict(assignment)
        #: labels of the decisions the run used so far
        self.active: set[str] = set()
        #: ``emit(op, inputs, loc)``: a subclass's :meth:`op` as one call of the op, its
        #: inputs and its source location, where it needs nothing else (instantiation)
        self._emit: Callable[[Op, tuple[V, ...], Any], V] | None = None

    # -- what subclasses define ---------------------------------------------------------
    def op(self, node: Node, op: Op, ins: list[V]) -> V:
        """The value of a plain op ``op`` (``node``'s, ``$labels`` resolved) on ``ins``."""
        raise NotImplementedError

    def input(self, node: Node, op: Op, ins: list[V]) -> V:
        """The value of a graph input (default: as :meth:`op`)."""
        return self.op(node, op, ins)

    def reduce(self, node: Node, op: Op, chosen: list[V]) -> V:
        """A ``select`` of several inputs: ``op`` (add, concat or padded concat) of them
        (default: as :meth:`op`)."""
        return self.op(node, op, chosen)

    # -- the choice semantics -----------------------------------------------------------
    def run(self) -> V:
        """Interpret the whole body; its output's value."""
        return self.region(self.space.body, [])

    def value(self, label: str, node: Node) -> Any:
        """The chosen value of decision ``label`` (marked active), read at ``node``."""
        self.active.add(label)
        try:
            return self.a[label]
        except KeyError:
            d = next((d for d in self.space.decisions if d.label == label), None)
            raise AssignmentError(
                f"assignment leaves out decision {label!r}, which this architecture uses",
                where=f"%{node.name} ({node.op.name})",
                loc=node.loc,
                hint=f"give {label} one of {list(d.options) if d else '?'}",
            ) from None

    def region(self, r: Graph, args: list[V]) -> V:
        """Interpret region ``r`` with ``args`` as its operands."""
        steps, out = r.derived.get(_PLAN) or _plan(r)  # (the graph drops it on any change)
        vals: list[V] = []
        a = self.a
        active = self.active
        emit = self._emit
        for kind, n, op, ins in steps:
            if kind == _K_OP:
                if emit is not None:  # the hot path of instantiation: one call a node
                    # (one operand, the common case, without a list comprehension's frame)
                    vals.append(emit(op, (vals[ins[0]],) if len(ins) == 1
                                     else tuple([vals[i] for i in ins]), n.loc))
                else:
                    vals.append(self.op(n, op, [vals[i] for i in ins]))
            elif kind == _K_ARG:
                vals.append(args[op])
            elif kind == _K_CHOOSE and op.label in a:
                active.add(op.label)
                vals.append(self.region(n.regions[a[op.label]], [vals[ins[0]]] if len(ins) == 1
                                        else [vals[i] for i in ins]))
            elif kind == _K_REFS and emit is not None:  # instantiation: resolve and emit
                _, labels, cache = op
                try:
                    key = tuple([a[lb] for lb in labels])
                except KeyError:  # the located error
                    key = tuple([self.value(lb, n) for lb in labels])
                active.update(labels)
                resolved = cache.get(key)
                if resolved is None:
                    resolved = self._resolve(n, op)
                vals.append(emit(resolved, tuple([vals[i] for i in ins]), n.loc))
            else:
                vals.append(self._special(kind, n, op, [vals[i] for i in ins]))
        return vals[out]

    def _special(self, kind: int, n: Node, op: Any, ins: list[V]) -> V:
        if kind == _K_CHOOSE:
            return self.region((n.regions or {})[self.value(op.label, n)], ins)
        if kind == _K_REFS:
            return self.op(n, self._resolve(n, op), ins)
        if kind == _K_INPUT:
            return self.input(n, op, ins)
        if kind == _K_REPEAT:
            count = self.value(op.label, n)
            x = ins[0]
            regions = n.regions or {}
            for i in range(count):
                x = self.region(RepeatOp.region_for(regions, i), [x])
            return x
        idx = picks(self.value(op.label, n))
        for i in idx:
            if not 0 <= i < len(ins):
                raise AssignmentError(f"input choice {op.label} picks #{i} of "
                                      f"{len(ins)} candidates", loc=n.loc)
        chosen = [ins[i] for i in idx]
        if len(chosen) == 1:
            return chosen[0]
        return self.reduce(n, reducer(op.reduce), chosen)

    def _resolve(self, n: Node, planned: tuple[Op, tuple[str, ...], dict]) -> Op:
        """The op of ``n`` with its ``$label`` fields set to the chosen values (cached per
        combination of values in the region's plan)."""
        base, labels, cache = planned
        key = tuple(self.value(lb, n) for lb in labels)
        resolved = cache.get(key)
        if resolved is None:
            try:
                resolved = resolve_refs(base, dict(zip(labels, key)))
            except NasirError as e:
                raise SpecError(f"{e.message} (after choosing {dict(zip(labels, key))})",
                                where=f"%{n.name}", loc=n.loc, hint=e.hint) from None
            cache[key] = resolved
        return resolved


class Instantiator(SpaceInterpreter[Node]):
    """Builds the concrete graph of an assignment into ``g`` (what
    :meth:`Space.instantiate` runs)."""

    def __init__(self, space: Space, assignment: Mapping[str, Any], g: Graph) -> None:
        super().__init__(space, assignment)
        self.g = g
        self._emit = g.append_trusted

    def op(self, node: Node, op: Op, ins: list[Node]) -> Node:
        return self.g.append_trusted(op, tuple(ins), node.loc)

    def input(self, node: Node, op: Op, ins: list[Node]) -> Node:
        return self.g.add(op, ins, name=node.name, loc=node.loc)

    def reduce(self, node: Node, op: Op, chosen: list[Node]) -> Node:
        return self.g.add(op, chosen, loc=node.loc)


class ActiveDecisions(SpaceInterpreter[None]):
    """Which decisions an assignment uses, without building its graph: :meth:`run`
    returns the labels. ``$label`` fields are marked used but not resolved, so an
    assignment whose values make an op invalid is only caught by instantiation."""

    def _resolve(self, n: Node, planned: tuple[Op, tuple[str, ...], dict]) -> Op:
        for lb in planned[1]:
            self.value(lb, n)
        return planned[0]

    def op(self, node: Node, op: Op, ins: list[None]) -> None:
        return None

    def run(self) -> set[str]:  # type: ignore[override]
        """The labels of the decisions the assignment uses."""
        super().run()
        return self.active
