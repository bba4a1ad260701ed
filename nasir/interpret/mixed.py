"""Mixed interpretation: a space body run over *every* open option of its choice points.

:class:`~nasir.interpret.SpaceInterpreter` runs a body for one assignment. A weight-sharing
supernet (:mod:`nasir.backends.torch.supernet`) needs the body once for all assignments:
each choice point keeps every option and the client mixes them. :class:`MixedInterpreter`
walks the same region plans and reads the same choice semantics, and at each choice point
hands its client a description — a :class:`Point` (``choose`` / ``repeat`` / ``select``:
the decision's label, its options, which of them stay open — every one, or the pinned
value), a :class:`ValuePoint` (an op with ``$label`` fields: its labels and the resolved op
of every combination) — and the client returns the mixed value. The option's region (or
a repetition's) is interpreted when the client asks for it (:meth:`~MixedInterpreter.branch`,
:meth:`~MixedInterpreter.layer`), through :meth:`~MixedInterpreter.subregion`, which a
client overrides when a region's result is not a value (a supernet's region module).

With ``edges=True`` a ``choose`` whose only operand is a single-pick ``select`` used by
nothing else (a cell block's operand: input decision, then op decision) is one
:class:`Edge`; with ``cells=True`` an ``add`` of two such edges over the same candidates,
their four decisions free, is one :class:`Cell` (DARTS' cell node).

:attr:`~MixedInterpreter.used` lists the free decisions the run reached, with their
options, in the order reached (a supernet's architecture logits).

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", channels=4, cells_per_stage=1)
>>> class Count(MixedInterpreter[int, int]):  # plain ops on the longest path
...     def op(self, node, op, ins): return 1 + max(ins, default=0)
...     def choose(self, p, ins): return max(self.branch(p, i, ins) for i in p.open)
>>> Count(sp, {}).run() > 10, len(Count(sp, {}).run_used()) == len(sp.decisions)
(True, True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nasir.errors import NasirError
from nasir.graph import Graph, Node
from nasir.interpret import (
    _K_ARG,
    _K_CHOOSE,
    _K_INPUT,
    _K_OP,
    _K_REFS,
    _K_REPEAT,
    _K_SELECT,
    SpaceInterpreter,
    _plan,
    picks,
)
from nasir.ops import AddOp, Op, RepeatOp, resolve_refs

if TYPE_CHECKING:
    from nasir.space import Space

__all__ = ["Cell", "Edge", "MixedInterpreter", "Point", "ValuePoint"]

V = TypeVar("V")
R = TypeVar("R")


@dataclass(frozen=True)
class Point:
    """A ``choose`` / ``repeat`` / ``select`` node as a mixed client sees it."""

    node: Node
    label: str
    options: tuple
    #: indices of the options still open: every one, or the pinned value's
    open: tuple[int, ...]
    #: the decision is pinned (by the interpreter's ``fixed``)
    pinned: bool
    #: ``select``: how several picked operands combine (``add``, ``concat``, ``pad_concat``)
    reduce: str = "add"

    def picks(self) -> dict[int, tuple[int, ...]]:
        """``select``: open option index → the operand positions it picks."""
        return {i: picks(self.options[i]) for i in self.open}


@dataclass(frozen=True)
class ValuePoint:
    """An op whose fields refer to decisions (``$label``), as a mixed client sees it."""

    node: Node
    #: the op with its references unresolved
    op: Op
    #: every label its fields refer to, in field order, and each one's options
    options: dict[str, tuple]
    #: the pinned ones among them, with their values
    fixed: dict[str, Any]

    @property
    def free(self) -> tuple[str, ...]:
        """The labels not pinned, in field order."""
        return tuple(lb for lb in self.options if lb not in self.fixed)

    def combinations(self) -> int:
        """How many combinations of the free labels' values there are."""
        return math.prod(len(self.options[lb]) for lb in self.free)

    def resolve(self, index_of: Callable[[str], int]) -> Op:
        """The op for one path: ``index_of(label)`` → option index of each free label."""
        return resolve_refs(self.op, {lb: self.fixed[lb] if lb in self.fixed
                                      else o[index_of(lb)] for lb, o in self.options.items()})

    def candidates(self) -> Iterator[tuple[tuple[int, ...], Op]]:
        """Every combination of the free labels (option indices, in :attr:`free` order)
        with its resolved op; combinations whose op does not verify are left out."""
        free = self.free
        for idx in itertools.product(*(range(len(self.options[lb])) for lb in free)):
            at = dict(zip(free, idx))
            try:
                op = self.resolve(at.__getitem__)
            except NasirError:
                continue
            yield idx, op


@dataclass(frozen=True)
class Edge:
    """An op choice on a single-pick input choice: every (candidate input, op) pair."""

    inp: Point
    choice: Point

    @property
    def labels(self) -> tuple[str, ...]:
        """The free ones of its two decisions (input first)."""
        return tuple(p.label for p in (self.inp, self.choice) if not p.pinned)


@dataclass(frozen=True)
class Cell:
    """The sum of two :class:`Edge` s over the same candidates, all four decisions free."""

    #: the ``add`` node
    node: Node
    a: Edge
    b: Edge

    @property
    def labels(self) -> tuple[str, ...]:
        """Input a, input b, op a, op b."""
        return (self.a.inp.label, self.b.inp.label, self.a.choice.label,
                self.b.choice.label)


class MixedInterpreter(SpaceInterpreter[V], Generic[V, R]):
    """Runs ``space``'s body over every open option (see the module docstring);
    ``fixed`` pins decisions to one value. ``V``: a value; ``R``: what
    :meth:`subregion` makes of a region (a value, by default)."""

    def __init__(self, space: Space, fixed: Mapping[str, Any], *, edges: bool = False,
                 cells: bool = False) -> None:
        super().__init__(space, fixed)
        self.edges = edges or cells
        self.cells = cells
        #: free decisions reached, label → options, in the order reached
        self.used: dict[str, tuple] = {}

    # -- what clients define (``op`` as for SpaceInterpreter) ---------------------------
    def arg(self, node: Node, index: int, args: list[V]) -> V:
        """The region operand ``index`` (default: ``args[index]``)."""
        return args[index]

    def choose(self, p: Point, ins: list[V]) -> V:
        """An op choice over its open options (:meth:`branch` runs one)."""
        raise NotImplementedError

    def repeat(self, p: Point, x: V) -> V:
        """A depth choice over its open counts (:meth:`layer` runs repetition ``i``)."""
        raise NotImplementedError

    def select(self, p: Point, ins: list[V]) -> V:
        """An input choice over its open picks (:meth:`Point.picks`)."""
        raise NotImplementedError

    def values(self, p: ValuePoint, ins: list[V]) -> V:
        """An op whose fields are decisions, over its candidates."""
        raise NotImplementedError

    def edge_operands(self, p: Point, ins: list[V]) -> V:
        """The ``select`` of an :class:`Edge`: its candidate operands, unpicked."""
        raise NotImplementedError

    def edge(self, e: Edge, x: V) -> V:
        """An :class:`Edge` on its select's value (:meth:`edge_operands`)."""
        raise NotImplementedError

    def cell_operand(self, e: Edge, x: V) -> V:
        """An edge of a :class:`Cell`, on its select's value (the cell mixes it)."""
        raise NotImplementedError

    def cell(self, c: Cell, ins: list[V]) -> V:
        """A :class:`Cell` on its two :meth:`cell_operand` values."""
        raise NotImplementedError

    def subregion(self, r: Graph, args: list[V]) -> R:
        """What an option's or repetition's region ``r`` makes (default: its value)."""
        out: Any = self.region(r, args)
        return out

    # -- the choice semantics, for clients ----------------------------------------------
    def branch(self, p: Point, i: int, args: list[V]) -> R:
        """Option ``i`` of op choice ``p``: its region on ``args``."""
        regions = p.node.regions or {}
        return self.subregion(regions[p.options[i]], args)

    def layer(self, p: Point, i: int, args: list[V]) -> R:
        """Repetition ``i`` (0-based) of depth choice ``p``: its region on ``args``."""
        return self.subregion(RepeatOp.region_for(p.node.regions or {}, i), args)

    def point(self, n: Node) -> Point:
        """The :class:`Point` of a ``choose`` / ``repeat`` / ``select`` node."""
        op: Any = n.op
        label: str = op.label
        options = self.space.decision(label).options
        pinned = label in self.a
        open_ = tuple(i for i, o in enumerate(options) if not pinned or o == self.a[label])
        return Point(n, label, options, open_, pinned, getattr(op, "reduce", "add"))

    def run_used(self) -> dict[str, tuple]:
        """Run the body; the free decisions it reached (:attr:`used`)."""
        self.run()
        return self.used

    # -- the walk -----------------------------------------------------------------------
    def _use(self, *points: Point) -> None:
        for p in points:
            if not p.pinned:
                self.used[p.label] = p.options

    def _value_point(self, n: Node, op: Op, labels: tuple[str, ...]) -> ValuePoint:
        opts = {lb: self.space.decision(lb).options for lb in labels}
        p = ValuePoint(n, op, opts, {lb: self.a[lb] for lb in labels if lb in self.a})
        for lb in p.free:
            self.used[lb] = opts[lb]
        return p

    def region(self, r: Graph, args: list[V]) -> V:
        steps, out = _plan(r)
        edges, cells = self._fused(r)
        edge_sel = {e.inp.node: e for e in edges.values()}
        in_cell = {e.choice.node: e for c in cells.values() for e in (c.a, c.b)}
        vals: list[V] = []
        for kind, n, op, ins in steps:
            xs = [vals[i] for i in ins]
            if n in edge_sel:
                v = self.edge_operands(edge_sel[n].inp, xs)
            elif n in in_cell:
                v = self.cell_operand(in_cell[n], xs[0])
            elif n in cells:
                c = cells[n]
                self._use(c.a.inp, c.b.inp, c.a.choice, c.b.choice)
                v = self.cell(c, xs)
            elif n in edges:
                e = edges[n]
                self._use(e.inp, e.choice)
                v = self.edge(e, xs[0])
            elif kind == _K_OP:
                v = self.op(n, op, xs)
            elif kind == _K_INPUT:
                v = self.input(n, op, xs)
            elif kind == _K_ARG:
                v = self.arg(n, op, args)
            elif kind == _K_REFS:
                v = self.values(self._value_point(n, op[0], op[1]), xs)
            else:
                p = self.point(n)
                self._use(p)
                if kind == _K_CHOOSE:
                    v = self.choose(p, xs)
                elif kind == _K_REPEAT:
                    v = self.repeat(p, xs[0])
                else:
                    assert kind == _K_SELECT
                    v = self.select(p, xs)
            vals.append(v)
        return vals[out]

    def _fused(self, r: Graph) -> tuple[dict[Node, Edge], dict[Node, Cell]]:
        """``choose`` node → its :class:`Edge`, ``add`` node → its :class:`Cell`."""
        if not self.edges:
            return {}, {}
        nodes = r.nodes()
        users: dict[Node, int] = {}
        for n in nodes:
            for i in n.inputs:
                users[i] = users.get(i, 0) + 1
        edges: dict[Node, Edge] = {}
        for n in nodes:
            if n.op.name != "choose" or len(n.inputs) != 1:
                continue
            s = n.inputs[0]
            if s.op.name != "select" or users.get(s, 0) != 1 or s is r.output:
                continue
            sel = self.point(s)
            if all(isinstance(o, int) for o in sel.options):
                edges[n] = Edge(sel, self.point(n))
        cells: dict[Node, Cell] = {}
        for n in nodes if self.cells else ():
            if not isinstance(n.op, AddOp) or len(n.inputs) != 2:
                continue
            ca, cb = n.inputs
            if ca is cb or ca not in edges or cb not in edges or users.get(ca) != 1 \
                    or users.get(cb) != 1:
                continue
            c = Cell(n, edges[ca], edges[cb])
            points = (c.a.inp, c.b.inp, c.a.choice, c.b.choice)
            if len(set(c.labels)) < 4 or any(p.pinned for p in points) \
                    or list(c.a.inp.node.inputs) != list(c.b.inp.node.inputs) \
                    or c.a.inp.options != c.b.inp.options \
                    or c.a.choice.options != c.b.choice.options:
                continue
            cells[n] = c
        return edges, cells
