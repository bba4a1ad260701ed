"""Shared builder of cell spaces: blocks that each pick two hidden states and two ops.

Every block ``b`` of a cell kind (``normal`` / ``reduce``) has, per operand ``x`` in
``a``/``b``, an input decision ``{kind}_b{b}_in_{x}`` (which earlier hidden state) and an
op decision ``{kind}_b{b}_op_{x}`` (which :class:`~nasir.ops.CellEdgeOp` op); the block's
value is the sum of its two operands. All cells of one kind share these decisions. Their
metadata: ``cell=kind``, ``block=b``, ``slot=x``, role ``input`` / ``op``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import AddOp, CellEdgeOp, Ref

__all__ = ["block_labels", "cell_blocks", "conv_out2", "genotype", "used_refs"]


def conv_out2(h: int) -> int:
    """Height after a stride-2 'same' op (1×1 stays 1×1)."""
    return (h - 1) // 2 + 1


def block_labels(kind: str, blocks: int) -> list[tuple[str, str]]:
    """(input label, op label) of every operand, in order."""
    return [(f"{kind}_b{b}_in_{x}", f"{kind}_b{b}_op_{x}") for b in range(blocks)
            for x in ("a", "b")]


def _edge(op: str, channels: int, reduce_from: int):
    edge = CellEdgeOp(op=op, out_channels=channels, reduce_from=reduce_from)
    return lambda b, x: b.op(edge, x)


def cell_blocks(s: SpaceBuilder, kind: str, states: list[Node], blocks: int,
                ops: Sequence[str], channels: int, reduce_from: int = 0,
                edge_ops: Mapping[str, str] | None = None) -> list[Node]:
    """Append ``blocks`` block values to ``states`` (two cell inputs first) and return it.

    ``edge_ops`` maps an option name to the :class:`~nasir.ops.CellEdgeOp` op it builds
    when they differ (ENAS's strided identity is a factorized reduce: ``skip_connect``).
    """
    states = list(states)
    names = dict(edge_ops or {})
    branches = {op: _edge(names.get(op, op), channels, reduce_from) for op in ops}
    labels = block_labels(kind, blocks)
    for b in range(blocks):
        terms = []
        with s.scope(cell=kind, block=b):
            for slot, (in_label, op_label) in zip("ab", labels[2 * b: 2 * b + 2]):
                h = s.select(in_label, states, slot=slot)
                terms.append(s.choose(op_label, branches, h, slot=slot))
        states.append(s.op(AddOp(), *terms))
    return states


def used_refs(kind: str, blocks: int) -> tuple[Ref, ...]:
    """Refs to the input decisions of one cell kind (for :class:`~nasir.ops.CellOutputOp`)."""
    return tuple(Ref(i) for i, _ in block_labels(kind, blocks))


def genotype(kind: str, pairs: Sequence[tuple[str, int]]) -> dict:
    """Assignment values from a DARTS-style list of (op, input) pairs, two per block."""
    out: dict = {}
    for (in_label, op_label), (op, j) in zip(block_labels(kind, len(pairs) // 2), pairs):
        out[in_label] = j
        out[op_label] = op
    return out
