"""Counting a space: distinct assignments of the decisions an architecture actually uses.

Two assignments that agree on every *active* decision (the ones instantiation reads)
give the same graph, so :attr:`Space.size <nasir.space.Space.size>` counts assignments
up to their inactive decisions; :attr:`~nasir.space.Space.raw_size` is the plain
product of domain sizes.

The count is a recursion over the body's structure, not an enumeration. A region's
count is the product of the domain sizes of the decisions it uses directly (value
refs, input choices) and the counts of its choice points; an op choice counts the sum
over its options of the chosen region's count, a depth choice the sum over its counts
of the product over the repetitions it runs. Products are only right for factors that
share no decision: choice points whose regions (transitively) use a common decision
that is not already active, or that nest their own label, are grouped and counted
together by fixing one of their labels per option (conditioning) and recounting the
rest under that value. A label that is both shared and structural (the same op or
depth label at several places, as in a repeated cell) is therefore counted exactly
too; only the cost grows, exponentially in the number of labels that must be fixed
jointly — in the built-in spaces a handful at most.

>>> from nasir.spaces import get_space
>>> count_active(get_space("nb201"))
15625
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from nasir.graph import Graph, Node
from nasir.ops.base import Ref
from nasir.ops.control import ChooseOp, RepeatOp, SelectOp

__all__ = ["brute_force_size", "count_active"]

_CONTROL = (ChooseOp, RepeatOp)
#: one occurrence of a structural label: its node, or None for a plain reference to it
_Occ = tuple[str, Node | None]


def _direct_labels(n: Node) -> list[str]:
    op = n.op
    if isinstance(op, SelectOp):
        return [op.label]
    out: list[str] = []
    for v in op.attrs().values():
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, Ref):
                out.append(x.label)
    return out


class _Counter:
    def __init__(self, space: Any) -> None:
        self.options = {d.label: d.options for d in space.decisions}
        self.control: set[str] = set()
        self._scans: dict[int, tuple[frozenset[str], tuple[_Occ, ...]]] = {}
        self._reach: dict[int, frozenset[str]] = {}
        self._keep: list[Any] = []  # keeps scanned graphs alive while ids key the caches
        self._collect_control(space.body)

    def _collect_control(self, g: Graph) -> None:
        for n in g.nodes():
            if isinstance(n.op, _CONTROL):
                self.control.add(n.op.label)
            for r in (n.regions or {}).values():
                self._collect_control(r)

    def scan(self, g: Graph) -> tuple[frozenset[str], tuple[_Occ, ...]]:
        """Plain labels region ``g`` uses directly, and its structural occurrences."""
        hit = self._scans.get(id(g))
        if hit is not None:
            return hit
        direct: set[str] = set()
        occ: list[_Occ] = []
        for n in g.nodes():
            if isinstance(n.op, _CONTROL):
                occ.append((n.op.label, n))
                continue
            for label in _direct_labels(n):
                if label in self.control:
                    occ.append((label, None))
                else:
                    direct.add(label)
        out = (frozenset(direct), tuple(occ))
        self._keep.append(g)
        self._scans[id(g)] = out
        return out

    def reach(self, occ: _Occ) -> frozenset[str]:
        """Every label an occurrence's regions may use (its own included)."""
        label, n = occ
        if n is None:
            return frozenset((label,))
        hit = self._reach.get(id(n))
        if hit is None:
            labels = {label}
            for r in (n.regions or {}).values():
                direct, inner = self.scan(r)
                labels |= direct
                for o in inner:
                    labels |= self.reach(o)
            hit = frozenset(labels)
            self._keep.append(n)
            self._reach[id(n)] = hit
        return hit

    @staticmethod
    def expand(n: Node | None, value: Any) -> list[Graph]:
        """The regions occurrence ``n`` runs when its label takes ``value``."""
        if n is None:
            return []
        regions = n.regions or {}
        if n.op.name == "choose":
            return [regions[value]]
        return [RepeatOp.region_for(regions, i) for i in range(int(value))]

    def flatten(self, regions: Iterable[Graph], pending: Iterable[_Occ],
                env: dict[str, Any]) -> tuple[set[str], list[_Occ]]:
        """Plain labels used by ``regions`` and ``pending`` under ``env`` (fixed structural
        labels are followed), and the structural occurrences left to decide."""
        stack = list(regions)
        direct: set[str] = set()
        out: list[_Occ] = []
        seen: set[int] = set()

        def visit(o: _Occ) -> None:
            if o[0] in env:
                stack.extend(self.expand(o[1], env[o[0]]))
            elif id(o[1]) not in seen or o[1] is None:
                seen.add(id(o[1]))
                out.append(o)

        for o in pending:
            visit(o)
        done: set[int] = set()
        while stack:
            g = stack.pop()
            if id(g) in done:
                continue
            done.add(id(g))
            d, occ = self.scan(g)
            direct |= d
            for o in occ:
                visit(o)
        return direct, out

    def count(self, regions: Sequence[Graph], pending: Sequence[_Occ], env: dict[str, Any],
              known: frozenset[str]) -> int:
        direct, occ = self.flatten(regions, pending, env)
        groups: dict[str, list[_Occ]] = {}
        for o in occ:
            groups.setdefault(o[0], []).append(o)
        total = math.prod(len(self.options[lb]) for lb in direct - known
                          if lb in self.options)
        known = known | direct
        for comp in self._components(groups, known | frozenset(env)):
            total *= self.branch(comp, groups, env, known)
        return total

    def _components(self, groups: dict[str, list[_Occ]],
                    fixed: frozenset[str]) -> list[list[str]]:
        """Labels of ``groups`` in sets that share no label outside ``fixed``."""
        comps: list[tuple[list[str], set[str]]] = []
        for label, occs in groups.items():
            reach = set().union(*(self.reach(o) for o in occs)) - fixed
            merged = [label]
            for c in [c for c in comps if c[1] & reach]:
                comps.remove(c)
                merged += c[0]
                reach |= c[1]
            comps.append((merged, reach))
        return [c[0] for c in comps]

    def branch(self, comp: list[str], groups: dict[str, list[_Occ]], env: dict[str, Any],
               known: frozenset[str]) -> int:
        label, others = comp[0], [o for lb in comp[1:] for o in groups[lb]]
        total = 0
        for value in self.options[label]:
            regions = [r for o in groups[label] for r in self.expand(o[1], value)]
            total += self.count(regions, others, {**env, label: value}, known)
        return total


def count_active(space: Any) -> int:
    """Number of distinct assignments of the active decisions of ``space`` (see the
    module docstring for the method); equals :func:`brute_force_size` on any space."""
    c = _Counter(space)
    return c.count([space.body], [], {}, frozenset())


def brute_force_size(space: Any) -> int:
    """The same number by enumerating every assignment (small spaces only).

    >>> from nasir.dsl import SpaceBuilder
    >>> from nasir.ops import ReLUOp
    >>> s = SpaceBuilder("two", input_shape=(2,))
    >>> x = s.choose("c", {"a": lambda b, h: b.op(ReLUOp(), h),
    ...                    "b": lambda b, h: b.select("pick", [h, b.op(ReLUOp(), h)])},
    ...              s.input)
    >>> sp = s.build(x)
    >>> sp.raw_size, brute_force_size(sp), count_active(sp)
    (4, 3, 3)
    """
    seen = set()
    for a in space.enumerate():
        active = space.active(a)
        seen.add(frozenset((lb, a[lb]) for lb in active if lb in a))
    return len(seen)
