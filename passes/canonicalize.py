"""``canonicalize``: remove what cannot affect the output.

Rules (each sound for any weights):

* a ``zero`` node, and a zero-preserving op (``relu``, pooling, bias-free conv, ``add``…)
  whose inputs are all zero, computes zero; ``mul`` by zero is zero;
* ``add`` drops zero operands; an ``add`` or ``concat`` with one operand is that operand;
* ``identity`` is its input;
* nodes with no path to the output are removed.

A node whose value is zero but whose user is not zero-preserving (for example
``relu_conv_bn``, whose BatchNorm adds a learned shift) keeps its place: ``BN(conv(0))`` is
a learned constant, not zero. This is where nasir's count of distinct NAS-Bench-201 cells
differs from the benchmark's own rule (see :mod:`nasir.passes.hashing`).

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @c {
...   %x = input() {shape=[4, 8, 8]}
...   %1 = zero(%x)
...   %2 = identity(%x)
...   %3 = add(%1, %2)
...   %4 = relu(%3)
...   return %4
... }''')
>>> CanonicalizePass().apply(g)
True
>>> print(g.text())
graph @c {
  %x = input() {shape=[4, 8, 8]}
  %4 = relu(%x)
  return %4
}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.graph import Graph, Node
from nasir.ops import ZeroOp
from nasir.passes.base import Pass

__all__ = ["CanonicalizePass", "canonicalize", "is_zero", "zero_nodes"]


def is_zero(n: Node, zero: set[Node]) -> bool:
    """Whether ``n`` computes zero, given the set of zero nodes before it."""
    op = n.op
    name = op.name
    if name == "zero":
        return True
    if name == "mul":
        return any(i in zero for i in n.inputs)
    return bool(n.inputs) and op.zero_preserving and not getattr(op, "bias", False) and all(
        i in zero for i in n.inputs)


def zero_nodes(g: Graph) -> set[Node]:
    """Nodes whose value is zero for every input and every weight."""
    zero: set[Node] = set()
    for n in g.nodes():
        if is_zero(n, zero):
            zero.add(n)
    return zero


def canonicalize(g: Graph) -> bool:
    """Apply the rules above to a fixpoint; returns whether anything changed."""
    changed = False
    while True:
        step = False
        zero = zero_nodes(g)
        for n in g.nodes():
            op = n.op
            if n in zero and op.name != "zero" and n.inputs and n.inputs[0].type == n.type \
                    and n.type is not None:
                z = g.add(ZeroOp(), [n.inputs[0]], loc=n.loc, type_=n.type)
                g.replace_all_uses(n, z)
                step = True
                continue
            if op.name == "add" and n not in zero:
                keep = [i for i in n.inputs if i not in zero]
                if len(keep) != len(n.inputs):
                    if len(keep) == 1:
                        g.replace_all_uses(n, keep[0])
                    else:
                        g.set_inputs(n, keep)
                    step = True
                    continue
            if (op.name in ("add", "concat") and len(n.inputs) == 1) or op.name == "identity":
                g.replace_all_uses(n, n.inputs[0])
                step = True
        if g.remove_dead():
            step = True
        if not step:
            return changed
        changed = True


@dataclass(frozen=True)
class CanonicalizePass(Pass):
    """Pre: a verified graph. Post: no identity, no zero operand of add, no dead nodes.

    Preserves the canonical hash (the hash applies these rules itself); parameter and MAC
    counts change when dead or zero branches go.
    """

    name: ClassVar[str] = "canonicalize"
    preserves: ClassVar[frozenset[str]] = frozenset({"hash"})

    def apply(self, g: Graph) -> bool:
        if not g.is_typed():
            from nasir.passes.verify import verify

            verify(g)
        return canonicalize(g)
