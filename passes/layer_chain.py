"""Layer chains: a space that is fixed ops, then blocks of repeated layers, then fixed ops.

MnasNet-style spaces are a chain: a stem of fixed ops, then blocks — each a depth
decision repeating one layer whose op is an op choice over single-op branches, with value
decisions as the op's attributes — then a head of fixed ops. A per-block lookup table
(``nasir.strategies.surrogates.tables.mnasnet_terms``) needs the stem, the head and, for
given decision values, the op a block's first or later layer instantiates. This analysis
answers those from the space's body, so that no strategy walks it.

>>> from nasir.spaces import get_space
>>> chain = layer_chain(get_space("tiny_mnasnet"))
>>> [op.name for op in chain.stem], chain.blocks, [op.name for op in chain.head][:2]
(['conv_bn_act'], ('b1_layers', 'b2_layers', 'b3_layers', 'b4_layers'), ['conv_bn_act', \
'global_avg_pool'])
>>> op = chain.layer_op(1, {"b2_op": "mbconv3", "b2_filters": 16, "b2_kernel": 5,
...                         "b2_se": 0.0, "b2_skip": True}, first=True)
>>> op.name, op.expand, op.kernel, op.stride
('mbconv', 3, 5, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasir.errors import SpecError
from nasir.graph import Graph, Node
from nasir.ops import Op, Ref, resolve_refs
from nasir.ops.control import ChooseOp, RepeatOp
from nasir.space import Space

__all__ = ["LayerChain", "layer_chain"]


def _fixed(n: Node) -> bool:
    return n.op.name != "input" and len(n.inputs) == 1 and not n.regions


def _only_op(region: Graph, where: str) -> Node:
    nodes = [n for n in region.nodes() if n.op.name != "arg"]
    if len(nodes) != 1:
        raise SpecError(f"{where}: a layer-chain block's region must hold one node, "
                        f"it holds {len(nodes)}", hint="layer_chain reads MnasNet-style spaces")
    return nodes[0]


@dataclass(frozen=True)
class LayerChain:
    """The chain of a space: ``stem`` ops, the blocks' depth decision labels, ``head`` ops."""

    stem: tuple[Op, ...]
    blocks: tuple[str, ...]
    head: tuple[Op, ...]
    _repeats: tuple[Node, ...]

    def layer_op(self, block: int, values: Mapping[str, Any], first: bool = True) -> Op:
        """The op the first (or a later) layer of block ``block`` (0-based, chain order)
        instantiates with the decision ``values`` (the block's op choice and the value
        decisions its op reads)."""
        rep = self._repeats[block]
        region = RepeatOp.region_for(rep.regions or {}, 0 if first else 1)
        choice = _only_op(region, f"%{rep.name}")
        if isinstance(choice.op, ChooseOp):
            label = choice.op.label
            choice = _only_op((choice.regions or {})[values[label]], f"{label}={values[label]}")
        op = choice.op
        refs = {v.label for v in op.attrs().values() if isinstance(v, Ref)}
        return resolve_refs(op, {lb: values[lb] for lb in refs}) if refs else op


def layer_chain(space: Space) -> LayerChain:
    """The :class:`LayerChain` of ``space``; a ``SpecError`` if it is not one (a node
    with several inputs or regions other than the blocks' repeats, or no block)."""
    stem: list[Op] = []
    head: list[Op] = []
    repeats: list[Node] = []
    labels: list[str] = []
    for n in space.body.nodes():
        if n.op.name == "input":
            continue
        if isinstance(n.op, RepeatOp) and not head:
            repeats.append(n)
            labels.append(n.op.label)
        elif _fixed(n):
            (head if repeats else stem).append(n.op)
        else:
            raise SpecError(f"space {space.name} is not a chain of layers: %{n.name} "
                            f"({n.op.name}) is not", hint="layer_chain reads MnasNet-style spaces")
    if not repeats:
        raise SpecError(f"space {space.name} has no repeated blocks",
                        hint="layer_chain reads MnasNet-style spaces")
    return LayerChain(tuple(stem), tuple(labels), tuple(head), tuple(repeats))
