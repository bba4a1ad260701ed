"""Structural hashing: equal for isomorphic graphs, sound for shared weights.

``graph_hash`` canonicalizes a copy, then hashes every node from its op, attributes, type
and its inputs' hashes (sorted for commutative ops): a Merkle hash of the expression
the output computes. Node names and order do not matter; two graphs with equal hashes
compute the same expression, so with weights keyed by expression they give equal outputs.

Named equivalences: ``"nasir"`` (the rule above) and ``"nb201"`` — the NAS-Bench-201
reference code's rule (an edge's term is ``#`` if its op is none or its source's form is
``#``, the source's form for skip, else ``(source)@op``; a node's form is its terms sorted
and joined by ``+``). The two counts differ: the NB201 rule keeps ``#`` terms inside sums
(``x + 0`` differs from ``x`` there, so it finds more distinct cells), while it also calls
``BN(conv(0))`` zero where nasir keeps it as a learned constant.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> a = sp.reference("resnet")
>>> b = a.replace(edge_1_3="none", edge_2_3="none")
>>> assignment_hash(sp, a) == assignment_hash(sp, b)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.errors import PassError
from nasir.graph import Graph, Node
from nasir.ops import Op
from nasir.passes.base import Pass
from nasir.passes.canonicalize import is_zero
from nasir.passes.verify import verify

__all__ = [
    "EQUIVALENCES",
    "HashPass",
    "assignment_hash",
    "count_unique",
    "graph_hash",
    "nb201_form",
]

EQUIVALENCES = ("nasir", "nb201")


def _op_sig(n: Node) -> str:
    return n.op.signature()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_MEMO: dict[tuple, str] = {}


def _node_digest(op: str | Op, ty: object, ins: tuple[str, ...]) -> str:
    key = (op, ty, ins)
    h = _MEMO.get(key)
    if h is None:
        sig = op if isinstance(op, str) else op.signature()
        h = _digest(f"{sig}|{ty}|{';'.join(ins)}")
        if len(_MEMO) > 200_000:
            _MEMO.clear()
        _MEMO[key] = h
    return h


def node_hashes(g: Graph) -> dict[Node, str]:
    """Merkle hash of each node's expression (the graph must be typed)."""
    zero: set[Node] = set()
    h: dict[Node, str] = {}
    for n in g.nodes():
        op = n.op
        if is_zero(n, zero):
            zero.add(n)
            h[n] = _node_digest("zero", n.type, ())
            continue
        if op.name == "identity" or (op.name in ("add", "concat") and len(n.inputs) == 1):
            h[n] = h[n.inputs[0]]
            continue
        ins = [h[i] for i in n.inputs if not (op.name == "add" and i in zero)]
        if op.name == "add" and len(ins) == 1:
            h[n] = ins[0]
            continue
        if op.commutative:
            ins.sort()
        h[n] = _node_digest(op, n.type, tuple(ins))
    return h


def graph_hash(g: Graph) -> str:
    """Canonical structural hash of a concrete graph (hex string, 128 bits).

    The input graph is not changed.
    """
    if not g.is_typed():
        verify(g)
    # node_hashes applies every canonicalization rule while hashing (zero propagation,
    # zero operands of add, identities; dead nodes never reach the output), so hashing
    # needs no rewritten copy: graph_hash(g) == graph_hash(canonicalized g).
    return node_hashes(g)[g.output]


def nb201_form(g: Graph) -> str:
    """The NAS-Bench-201 reference rule's string for a cell graph (see module doc)."""
    names = {"zero": "none", "identity": "skip_connect", "avg_pool2d": "avg_pool_3x3"}
    form: dict[Node, str] = {}

    def term(e: Node) -> str:
        src = form[e.inputs[0]]
        if e.op.name == "zero" or src == "#":
            return "#"
        if e.op.name == "identity":
            return src
        name = names.get(e.op.name)
        if name is None:
            k = getattr(e.op, "kernel", "?")
            name = f"nor_conv_{k}x{k}" if e.op.name == "relu_conv_bn" else e.op.name
        return f"({src})@{name}"

    for n in g.nodes():
        if not n.inputs:
            form[n] = "0"
        elif n.op.name == "add":
            form[n] = "+".join(sorted(form[i] for i in n.inputs))
        else:
            form[n] = term(n)
            if n.op.name not in ("add",):
                pass
    # an edge node feeding an add contributes its term; the add's form is computed from
    # its inputs' forms, which for edge nodes already are their terms.
    return form[g.output]


def _view(space: Any, a: Mapping[str, Any]) -> Graph:
    g = space.hash_view(a)
    verify(g)
    return g


def assignment_hash(space: Any, a: Mapping[str, Any], equivalence: str = "nasir") -> str:
    """Canonical hash of the architecture ``a`` of ``space``.

    Spaces whose macro skeleton is fixed and whose decisions all live in one repeated cell
    (NB201) have a ``view``: ``space.hash_view(a)`` is the cell alone: hashing it is equivalent to
    hashing the whole network and far cheaper.
    """
    g = _view(space, a)
    if equivalence == "nb201":
        return nb201_form(g)
    if equivalence != "nasir":
        raise PassError(f"unknown equivalence {equivalence!r}",
                        hint=f"use one of {', '.join(EQUIVALENCES)}")
    return graph_hash(g)


def count_unique(space: Any, equivalence: str = "nasir") -> int:
    """Number of distinct canonical hashes over every assignment of ``space``."""
    return len({assignment_hash(space, a, equivalence) for a in space.enumerate()})


@dataclass(frozen=True)
class HashPass(Pass):
    """Store the canonical hash in ``facts['hash']`` (``equivalence``: nasir), or the
    NAS-Bench-201 form in ``facts['hash_nb201']`` (``equivalence="nb201"``)."""

    name: ClassVar[str] = "hash"
    analysis: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = frozenset({"hash", "hash_nb201"})
    equivalence: str = "nasir"

    def apply(self, g: Graph) -> bool:
        if self.equivalence not in EQUIVALENCES:
            raise PassError(f"unknown equivalence {self.equivalence!r}",
                            hint=f"use one of {', '.join(EQUIVALENCES)}")
        if not g.is_typed():
            verify(g)
        if self.equivalence == "nasir":
            g.set_facts(hash=graph_hash(g))
        else:
            g.set_facts(hash_nb201=nb201_form(g))
        return False
