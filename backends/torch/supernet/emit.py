"""IR emission from a supernet: a child's concrete graph, or the mixed graph the memory
model reads (each ``w·o`` of a mixed candidate is a ``mul`` node tagged ``mix_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from nasir.backends.torch.supernet.mixing import _live
from nasir.errors import AssignmentError
from nasir.graph import Graph, Node
from nasir.ops import AddOp, InputOp, MulOp, Op
from nasir.types import TensorType


class _Emit:
    """Graph-building state: the concrete (or mixed) graph and its weight sources."""

    def __init__(self, path: Mapping[str, int] | None) -> None:
        self.g = Graph("child")
        self.path = path
        self.sources: dict[str, nn.Module] = {}
        #: mixed graph: pure ops by signature and operands (see ``_Fixed``)
        self.memo: dict[tuple, Node] = {}

    def add(self, op: Op, ins: list[Node], source: nn.Module | None = None) -> Node:
        n = self.g.add(op, ins)
        if source is not None:
            self.sources[n.name] = source
        return n

    def mix(self, labels: tuple[str, ...], cands: dict[tuple[int, ...], Any],
            zeros: frozenset[tuple[int, ...]] = frozenset()) -> Node:
        if self.path is not None:
            key = tuple(self.path[lb] for lb in labels)
            if key not in cands:
                raise AssignmentError(f"no valid candidate for {dict(zip(labels, key))}")
            out = cands[key]()
            # memory model: binarized mode's gate saves this output when the logits train
            out.meta = {**(out.meta or {}), "mix_out": True}
            return out
        # in _Ctx.mix's order (candidate, w·o, running sum), so that the memory model
        # sees the real lifetimes. w·o makes a new tensor and keeps o for backward when w
        # requires grad (logits trained): a mul of o by itself, tagged for the model
        total: Node | None = None
        # _Ctx.mix does not run zero candidates either
        for fn in _live(cands, lambda key: key in zeros).values():
            o = fn()
            p = self.g.add(MulOp(), [o, o])
            p.meta = {"mix_weight": True}
            total = p if total is None else self.g.add(AddOp(), [total, p])
        assert total is not None
        return total

def _tiny(op: Op, in_types: list[TensorType]) -> Graph:
    g = Graph("cand")
    ins = [g.add(InputOp(shape=t.shape, dtype=t.dtype), name=f"in{i}")
           for i, t in enumerate(in_types)]
    g.set_output(g.add(op, ins, name="op"))
    return g
