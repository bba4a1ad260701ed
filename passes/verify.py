"""The ``verify`` and ``infer-shapes`` passes (the checks themselves live in
:mod:`nasir.passes.verifier`, below the pass manager, and are re-exported here).

>>> from nasir.errors import VerifyError
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @bad {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = linear(%x) {out_features=10}
...   return %1
... }''')
>>> try:
...     VerifyPass().apply(g)
... except VerifyError as e:
...     print(e)
linear: expects a vector (rank 1), got rank 3 (inputs: f32[3,8,8])
  where: node %1 (linear)
  fix:   insert flatten before linear layers
  IR around the failure:
      %x = input() {shape=[3, 8, 8]} : f32[3,8,8]
  --> %1 = linear(%x)
      return %1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.graph import Graph
from nasir.passes.base import Pass
from nasir.passes.verifier import infer_types, ir_context, verify

__all__ = ["InferShapesPass", "VerifyPass", "infer_types", "ir_context", "verify"]


@dataclass(frozen=True)
class VerifyPass(Pass):
    """Verify the graph. Pre: none. Post: every node has a type; the graph is unchanged."""

    name: ClassVar[str] = "verify"
    analysis: ClassVar[bool] = True

    def apply(self, g: Graph) -> bool:
        verify(g)
        return False


@dataclass(frozen=True)
class InferShapesPass(Pass):
    """Infer the type of every node. Post: ``node.type`` set everywhere."""

    name: ClassVar[str] = "infer-shapes"
    analysis: ClassVar[bool] = True

    def apply(self, g: Graph) -> bool:
        verify(g)
        return False
