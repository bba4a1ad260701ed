"""PNAS cell space (Liu et al., ECCV 2018) with PNASNet-5 (mobile).

NASNet's cell structure (see :mod:`nasir.spaces.nasnet`) with PNAS's changes: 8 ops (3×3,
5×5, 7×7 separable convs, 1×7+7×1 conv, identity, 3×3 average and max pool, 3×3 dilated
conv), a single cell type (a reduction is the same cell with stride 2, so the 20 decisions
are shared by every cell) and the cell output concatenating all B=5 blocks.

Macro network (TF-slim ``build_pnasnet_mobile``): NASNet's ImageNet stem (32-filter 3×3
stride-2 conv, two stride-2 stem cells at F/4, F/2), 9 cells with F=54 where cells 3 and 6
stride and double F, ReLU, pooling, dropout, linear. At 224×224 PNASNet-5 has 5.1M params
and 588M MACs per the paper's Table 4 (mobile setting).

Options for progressive search and small inputs:

* ``blocks=B``: cells of ``B`` blocks (the paper's ``B``; default 5).
* ``progressive=True``: adds the op decision ``cell_blocks`` (options ``"1"``…``"B"``)
  choosing how many blocks every cell has. A cell of ``b`` blocks is a real ``b``-block
  cell: blocks ``b+1…B`` are not built, their decisions are inactive, and the cell output
  concatenates the ``b`` blocks only (PNAS concatenates every block; NASNet's
  unused-states rule is not PNAS's). This is the cell family PNAS grows (level ``b`` =
  ``b`` blocks, :class:`nasir.strategies.pnas.PrefixOrder`). With ``cell_blocks="5"``
  the network equals the plain space's (PNASNet-5 is a reference of both).
* ``stem="cifar"``: the CIFAR stem (stride-1 3×3 conv of ``3F`` filters, no stem cells),
  for inputs too small for three stride-2 stem layers (8×8 digits: the ImageNet stem
  leaves 1×1 maps before the first cell).
* ``ops``: a subset of :data:`OPS` (fewer level-1 cells for short searches).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(20, ['pnasnet_5'])
>>> g = build(input_shape=(1, 8, 8), num_classes=10, progressive=True, stem="cifar")
>>> len(g.decisions), g.decisions[0].label, g.decisions[0].options
(21, 'cell_blocks', ('1', '2', '3', '4', '5'))
>>> sorted(g.active({"cell_blocks": "1", "cell_b0_in_a": 0, "cell_b0_op_a": "identity",
...                  "cell_b0_in_b": 1, "cell_b0_op_b": "max_pool_3x3"}))
['cell_b0_in_a', 'cell_b0_in_b', 'cell_b0_op_a', 'cell_b0_op_b', 'cell_blocks']
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
from nasir.graph import Node
from nasir.ops import (
    CellAlignOp,
    ConcatOp,
    ReLUConvBNOp,
    ReLUOp,
)
from nasir.space import Space
from nasir.spaces._cells import cell_blocks, conv_out2
from nasir.spaces.nasnet import build_cells, head, stem_input, tf_cell

__all__ = ["COUNT_LABEL", "OPS", "REFERENCES", "build"]

OPS = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_1x7_7x1", "identity",
       "avg_pool_3x3", "max_pool_3x3", "dil_conv_3x3")

#: label of the block-count decision of ``build(progressive=True)``
COUNT_LABEL = "cell_blocks"

# TF-slim nets/nasnet/pnasnet.py, PNasNetNormalCell.
REFERENCES = {"pnasnet_5": tf_cell(
    "cell", ["separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
             "separable_5x5_2", "separable_3x3_2", "separable_3x3_2", "max_pool_3x3",
             "separable_3x3_2", "none"], [1, 1, 0, 0, 0, 0, 4, 0, 1, 0])}


def _check(stem: str, blocks: int, ops: Sequence[str]) -> tuple[str, ...]:
    if stem not in ("imagenet", "cifar"):
        raise SpecError(f"pnas: unknown stem {stem!r}", where="build option stem",
                        hint="use 'imagenet' (PNASNet mobile) or 'cifar' (small inputs)")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise SpecError(f"pnas: blocks must be an int >= 1, got {blocks!r}",
                        where="build option blocks", hint="the paper uses blocks=5")
    ops = tuple(ops)
    bad = [o for o in ops if o not in OPS]
    if not ops or bad or len(set(ops)) != len(ops):
        raise SpecError(f"pnas: ops must be distinct names from the PNAS op set, got "
                        f"{list(ops)}", where="build option ops",
                        hint=f"choose from {', '.join(OPS)}")
    return ops


class _GrowingCells:
    """PNAS cells whose block count is the decision ``cell_blocks`` (a choice per cell
    with one branch per count; every cell shares the decision and the block decisions)."""

    def __init__(self, s: SpaceBuilder, h: int, blocks: int, ops: Sequence[str]) -> None:
        self.s, self.h, self.blocks, self.ops = s, h, blocks, ops

    def _branch(self, n: int, filters: int, reduce_from: int):
        def build(b: SpaceBuilder, h0: Node, p: Node) -> Node:
            states = cell_blocks(b, "cell", [h0, p], n, self.ops, filters, reduce_from)
            return states[2] if n == 1 else b.op(ConcatOp(), *states[2:])
        return build

    def cell(self, x: Node, prev: Node | None, filters: int, reduction: bool) -> Node:
        s = self.s
        p = x if prev is None else s.op(CellAlignOp(out_channels=filters, size=self.h), prev)
        h0 = s.op(ReLUConvBNOp(out_channels=filters, kernel=1), x)
        reduce_from = self.h if reduction and self.h > 1 else 0
        branches = {str(n): self._branch(n, filters, reduce_from)
                    for n in range(1, self.blocks + 1)}
        out = s.choose(COUNT_LABEL, branches, h0, p, role="count", cell="cell")
        if reduce_from:
            self.h = conv_out2(self.h)
        return out


def _growing_network(s: SpaceBuilder, input_shape: Sequence[int], filters: int, cells: int,
                     blocks: int, ops: Sequence[str], stem: str) -> Node:
    """:func:`nasir.spaces.nasnet.build_cells` for PNAS (reductions are strided cells),
    with cells of ``cell_blocks`` blocks."""
    x, h = stem_input(s, input_shape, filters, stem)
    c = _GrowingCells(s, h, blocks, ops)
    outs: list[Node | None] = [None, x]
    if stem == "imagenet":
        for i in range(2):
            x = c.cell(x, outs[-2], int(filters * 0.25 * 2 ** i), reduction=True)
            outs.append(x)
    scale = 1
    for i in range(cells):
        stride2 = i in (cells // 3, 2 * cells // 3)
        scale *= 2 if stride2 else 1
        x = c.cell(x, outs[-2], filters * scale, reduction=stride2)
        outs.append(x)
    return s.op(ReLUOp(), x)


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          filters: int = 54, cells: int = 9, dropout: float = 0.5, stem: str = "imagenet",
          blocks: int = 5, progressive: bool = False, ops: Sequence[str] = OPS) -> Space:
    """The PNAS space (defaults: PNASNet-5 mobile at 224×224; inputs down to 3×3, or 1×1
    with ``stem='cifar'``); ``blocks``, ``progressive``, ``ops``: see the module doc."""
    ops = _check(stem, blocks, ops)
    s = SpaceBuilder("pnas", input_shape)
    if progressive:
        x = _growing_network(s, input_shape, filters, cells, blocks, ops, stem)
    else:
        red = (cells // 3, 2 * cells // 3)
        x = build_cells(s, input_shape, filters, cells, blocks, ops, stem, "blocks", red,
                        False, kinds=("cell", "cell"))
    out = head(s, x, num_classes, dropout)
    refs: dict = {}
    if blocks == 5 and set(OPS) <= set(ops):
        refs = {k: {**v, COUNT_LABEL: "5"} if progressive else v
                for k, v in REFERENCES.items()}
    return s.build(out, references=refs, meta={
        "paper": "PNAS (Liu et al., ECCV 2018)", "ops": list(ops),
        "macro": {"filters": filters, "cells": cells, "stem": stem, "blocks": blocks,
                  "progressive": bool(progressive)},
        "references": {"pnasnet_5": "paper Table 4 (mobile): 5.1M params, 588M MACs"}})
