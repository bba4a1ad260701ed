"""``expand-composites``: lower composite ops (MBConv, SepConv, ResBlock…) to primitives.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[8, 4, 4]}
...   %1 = relu_conv_bn(%x) {out_channels=8, kernel=1}
...   return %1
... }''')
>>> ExpandCompositesPass().apply(g)
True
>>> print(g.text())
graph @g {
  %x = input() {shape=[8, 4, 4]}
  %2 = relu(%x)
  %3 = conv2d(%2) {out_channels=8, kernel=1}
  %4 = batch_norm(%3)
  return %4
}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.graph import Graph, Node
from nasir.ops import CompositeOp
from nasir.passes.base import Pass
from nasir.passes.verify import verify

__all__ = ["ExpandCompositesPass", "expand_composites"]


class _GraphEmitter:
    def __init__(self, g: Graph, loc: Any, origin: str) -> None:
        self.g = g
        self.loc = loc
        self.origin = origin

    def type(self, v: Node) -> Any:
        return v.type

    def __call__(self, op: Any, *ins: Node) -> Node:
        if op.composite:
            return op.lower(self, *ins)
        return self.g.add(op, ins, loc=self.loc, type_=op.infer(tuple(i.type for i in ins)),
                          meta={"origin": self.origin})


def expand_composites(g: Graph) -> bool:
    """Rebuild ``g`` with every composite op lowered; returns whether any was."""
    if not any(n.op.composite for n in g.nodes()):
        return False
    verify(g)
    new = g.empty_like()
    env: dict[Node, Node] = {}
    for n in g.nodes():
        ins = [env[i] for i in n.inputs]
        if isinstance(n.op, CompositeOp):  # the ops whose ``composite`` is set
            em = _GraphEmitter(new, n.loc, n.name)
            env[n] = n.op.lower(em, *ins)
        else:
            env[n] = new.add(n.op, ins, name=n.name, loc=n.loc, type_=n.type, meta=n.meta)
    new.set_output(env[g.output])
    g.adopt(new)
    return True


@dataclass(frozen=True)
class ExpandCompositesPass(Pass):
    """Pre: a verified graph. Post: only primitive ops; each new node's ``meta['origin']``
    names the composite node it came from. Preserves the parameter, MAC and activation
    counts (composites count as their expansion)."""

    name: ClassVar[str] = "expand-composites"
    preserves: ClassVar[frozenset[str]] = frozenset({"params", "macs", "activation_bytes"})

    def apply(self, g: Graph) -> bool:
        return expand_composites(g)
