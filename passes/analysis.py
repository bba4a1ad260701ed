"""Analyses: parameters, MACs (conv + linear multiply-accumulates), activation memory.

A user op (:func:`nasir.ops.user_op`) counts its module's parameters and the MACs of its
declared rule (else torch's flop counter on a batch of one).

>>> from nasir.spaces import get_space
>>> g = get_space("mobilenet_v2").instantiate({})
>>> analyze(g)["params"]
3504872
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nasir.errors import NasirError
from nasir.graph import Graph
from nasir.ops.expansion import activation_elements
from nasir.passes.base import Pass
from nasir.passes.verify import verify

__all__ = ["FACTS", "ActivationMemoryPass", "CountMacsPass", "CountParamsPass", "analyze"]

_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i64": 8}


#: the facts :func:`analyze` records
FACTS = frozenset({"params", "macs", "activation_bytes"})


def _typed(g: Graph) -> None:
    if not g.is_typed():
        verify(g)


def analyze(g: Graph) -> dict[str, int]:
    """Params, MACs and activation bytes (per sample) of a concrete graph."""
    _typed(g)
    params = macs = act = 0
    for n in g.nodes():
        ins = tuple(i.ttype for i in n.inputs)  # _typed(g) typed every node
        out = n.ttype
        try:
            params += n.op.params(ins, out)
            macs += n.op.macs(ins, out)
        except NasirError as e:  # a user op's rule or module: say which node
            raise type(e)(e.message, where=e.where or f"node %{n.name} ({n.op.name})",
                          loc=n.loc, hint=e.hint) from None
        elems = activation_elements(n.op, ins) if n.op.composite else out.numel
        act += elems * _BYTES[out.dtype]
    g.set_facts(params=params, macs=macs, activation_bytes=act)
    return {"params": params, "macs": macs, "activation_bytes": act}


@dataclass(frozen=True)
class CountParamsPass(Pass):
    """Store the parameter count in ``facts['params']`` (BN γ/β included)."""

    name: ClassVar[str] = "count-params"
    analysis: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = FACTS

    def apply(self, g: Graph) -> bool:
        analyze(g)
        return False


@dataclass(frozen=True)
class CountMacsPass(Pass):
    """Store multiply-accumulates of conv and linear layers in ``facts['macs']``."""

    name: ClassVar[str] = "count-macs"
    analysis: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = FACTS

    def apply(self, g: Graph) -> bool:
        analyze(g)
        return False


@dataclass(frozen=True)
class ActivationMemoryPass(Pass):
    """Store the bytes of all activations of one sample in ``facts['activation_bytes']``."""

    name: ClassVar[str] = "activation-memory"
    analysis: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = FACTS

    def apply(self, g: Graph) -> bool:
        analyze(g)
        return False
