"""Mutation passes on assignments: op, value, input (hidden state), depth, identity.

A mutation works on a copy, always yields a valid member of the space (its graph
verifies), changes a decision the architecture actually uses, and records provenance.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> a = sp.reference("resnet")
>>> b = mutate(sp, a, np.random.default_rng(0), kind="op")
>>> b.provenance["mutation"], sum(a[k] != b[k] for k in a)
('op', 1)
>>> len(neighbours(sp, a))
24
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nasir.errors import NasirError, SpecError
from nasir.graph import Graph
from nasir.ops.control import ChooseOp, RepeatOp, SelectOp
from nasir.space import Assignment, Decision, Space

__all__ = ["MUTATIONS", "always_active", "mutate", "neighbours"]

#: mutation kinds → decision kinds they change (``identity`` changes nothing)
MUTATIONS: dict[str, tuple[str, ...]] = {
    "op": ("op",),
    "value": ("value",),
    "input": ("input",),
    "depth": ("depth",),
    "identity": (),
}


def _surely_used(g: Graph, depth_opts: dict[str, tuple]) -> set[str]:
    """Labels that any instantiation of region ``g`` certainly uses."""
    from nasir.ops.base import Ref

    used: set[str] = set()
    for n in g.nodes():
        op = n.op
        if isinstance(op, ChooseOp | RepeatOp | SelectOp) and op.label:
            used.add(op.label)
        else:
            for v in op.attrs().values():
                for x in v if isinstance(v, tuple) else (v,):
                    if isinstance(x, Ref):
                        used.add(x.label)
        if not n.regions:
            continue
        if isinstance(op, RepeatOp):
            least = min(depth_opts.get(op.label, (0,)))
            for r in {id(r): r for r in (RepeatOp.region_for(n.regions, i)
                                         for i in range(least))}.values():
                used |= _surely_used(r, depth_opts)
        else:
            sets = [_surely_used(r, depth_opts) for r in n.regions.values()]
            used |= set.intersection(*sets) if sets else set()
    return used


def always_active(space: Space) -> frozenset[str]:
    """Labels that every assignment uses (cached): mutating them always changes the graph."""
    depth_opts = {d.label: d.options for d in space.decisions if d.kind == "depth"}
    return space.memo("always_active",
                      lambda: frozenset(_surely_used(space.body, depth_opts)))


def _active(space: Space, a: Assignment) -> set[str] | frozenset[str]:
    static = always_active(space)
    if len(static) == len(space.decisions):
        return static
    return space.active(a)


def _new_value(d: Decision, old: Any, rng: np.random.Generator) -> Any:
    k = d.index(old)
    if d.kind == "depth":
        steps = [j for j in (k - 1, k + 1) if 0 <= j < d.size]
        return d.options[steps[int(rng.integers(len(steps)))]]
    j = int(rng.integers(d.size - 1))
    return d.options[j + (j >= k)]


def _valid(space: Space, a: Assignment) -> bool:
    from nasir.passes.verify import verify

    try:
        verify(space.instantiate(a))
    except NasirError:
        return False
    return True


def mutate(space: Space, a: Assignment, rng: np.random.Generator, kind: str | None = None,
           *, kinds: Sequence[str] | None = None, max_tries: int = 50,
           check: bool = True) -> Assignment:
    """One mutation of ``a``. ``kind`` fixes the mutation; otherwise one of ``kinds``
    (default: every non-identity kind the space offers) is drawn.

    The result's ``provenance`` holds ``mutation``, ``label``, ``old``, ``new`` and
    ``parent`` (the parent's JSON form).
    """
    a = a if space.owns(a) else space.check(a)
    if kind is not None and kind not in MUTATIONS:
        raise SpecError(f"unknown mutation {kind!r}", hint=f"use one of {', '.join(MUTATIONS)}")
    if kind == "identity":
        return Assignment(a, {"mutation": "identity", "parent": a.to_json()})
    active = _active(space, a)
    pool_kinds = [kind] if kind else list(kinds or [k for k in MUTATIONS if k != "identity"])
    candidates = [d for d in space.decisions if d.label in active and d.size > 1
                  and any(d.kind in MUTATIONS[k] for k in pool_kinds)]
    if not candidates:
        raise SpecError(f"no decision of {space.name} can take a {kind or 'any'} mutation",
                        hint="choose another mutation kind")
    for _ in range(max_tries):
        d = candidates[int(rng.integers(len(candidates)))]
        old = a.get(d.label, d.options[0])
        new = _new_value(d, old, rng)
        vals = dict(a)
        vals[d.label] = new
        child = space.check(vals)
        child.provenance = {"mutation": {"op": "op", "value": "value", "input": "input",
                                         "depth": "depth"}[d.kind],
                            "label": d.label, "old": old, "new": new, "parent": a.to_json()}
        if not check or _valid(space, child):
            return child
    raise SpecError(f"no valid {kind or ''} mutation of this architecture found in "
                    f"{max_tries} tries", hint="the space may be too constrained here")


def neighbours(space: Space, a: Assignment, *, check: bool = True) -> list[Assignment]:
    """All one-step mutations of ``a`` (every other option of every active decision)."""
    a = space.check(a)
    active = _active(space, a)
    out = []
    for d in space.decisions:
        if d.label not in active:
            continue
        old = a.get(d.label, d.options[0])
        for o in d.options:
            if o == old and type(o) is type(old):
                continue
            vals = dict(a)
            vals[d.label] = o
            child = space.check(vals)
            child.provenance = {"mutation": d.kind, "label": d.label, "old": old, "new": o}
            if not check or _valid(space, child):
                out.append(child)
    return out
