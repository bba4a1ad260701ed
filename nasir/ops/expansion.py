"""Type-only expansion of composite ops: infer their output type and count params/MACs."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from nasir.types import TensorType

__all__ = ["activation_elements", "count_composite", "infer_composite"]


class _TypeEmitter:
    """An ``emit`` that tracks only types and sums parameters and MACs."""

    def __init__(self) -> None:
        self.params = 0
        self.macs = 0
        self.act = 0

    def type(self, v: TensorType) -> TensorType:
        return v

    def __call__(self, op: Any, *ins: TensorType) -> TensorType:
        if op.composite:
            return op.lower(self, *ins)
        out = op.infer(ins)
        self.params += op.params(ins, out)
        self.macs += op.macs(ins, out)
        self.act += out.numel
        return out


@lru_cache(maxsize=65536)
def _run(op: Any, ins: tuple[TensorType, ...]) -> tuple[TensorType, int, int, int]:
    em = _TypeEmitter()
    out = op.lower(em, *ins)
    return out, em.params, em.macs, em.act


def infer_composite(op: Any, ins: tuple[TensorType, ...]) -> TensorType:
    """Output type of a composite op (cached by op and input types)."""
    return _run(op, ins)[0]


def count_composite(op: Any, ins: tuple[TensorType, ...]) -> tuple[int, int]:
    """(params, MACs) of a composite op."""
    _, p, m, _ = _run(op, ins)
    return p, m


def activation_elements(op: Any, ins: tuple[TensorType, ...]) -> int:
    """Elements of every intermediate and output value of a composite op, per sample."""
    return _run(op, ins)[3]
