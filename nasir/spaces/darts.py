"""DARTS cell space (Liu et al., ICLR 2019), discrete form, with DARTS-V1 and DARTS-V2.

A cell has two inputs (the two previous cells' outputs, preprocessed to C channels: a
factorized reduce after a reduction cell, ReLU-1×1-conv-BN otherwise) and 4 intermediate
nodes; node ``b`` sums two operands, each an input decision (any earlier state) and an op
decision over DARTS's 8 ops (none, 3×3 max/avg pool, skip, 3×3/5×5 separable, 3×3/5×5
dilated). In a reduction cell, ops on the two cell inputs have stride 2 (a strided skip is a
factorized reduce). The cell output concatenates the 4 nodes. Normal and reduction cells
each have their own 16 decisions, shared by every cell of that kind.

The discrete space allows both operands of a node to read the same state (as NASNet's
does); DARTS's derivation always picks two different ones. DARTS searches it with a mixed
op on every incoming edge of a node and one logit per (edge, op) — 14 edges × 8 ops per
cell kind, 224 in all — and keeps each node's two strongest edges
(``Supernet(space, edge_alphas=True)``, the ``darts`` strategy; the space's four decisions
of a node are read back from that matrix).

Macro network (CIFAR-10 evaluation setting): 3×3 conv stem to 3C and BN, ``layers`` cells
(C=36, 20 cells, reductions at 1/3 and 2/3 of the depth doubling C), global pooling,
linear. The auxiliary head is not part of the space. DARTS-V2 has 3,349,342 parameters
(DARTS logs: 3.349342MB without the auxiliary head; paper Table 1: 3.3M). DARTS-V1 has
3,169,414, which is what the released code counts for it (``count_parameters_in_MB``:
3.169414MB): V1 is the genotype the code release of 2018-06-25 shipped as ``DARTS``,
renamed ``DARTS_V1`` on 2018-08-03 when the rerun ``DARTS_V2`` was added; the paper's
first-order cell (3.3M) is not in the repository.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(32, ['darts_v1', 'darts_v2'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import (
    BatchNormOp,
    CellAlignOp,
    ConcatOp,
    Conv2dOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    ReLUConvBNOp,
)
from nasir.space import Space
from nasir.spaces._cells import cell_blocks, conv_out2, genotype

__all__ = ["OPS", "REFERENCES", "build"]

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")


def _geno(normal, reduce) -> dict:
    return {**genotype("normal", normal), **genotype("reduce", reduce)}


# Genotypes from the DARTS repository (quark0/darts, cnn/genotypes.py at a00cad0).
REFERENCES = {
    "darts_v1": _geno(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "darts_v2": _geno(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
}


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, channels: int = 36,
          layers: int = 20, nodes: int = 4) -> Space:
    """The DARTS space; at 1×1 maps a reduction cell no longer strides."""
    s = SpaceBuilder("darts", input_shape)
    stem = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=3 * channels, kernel=3), s.input))
    h = int(input_shape[1])
    prev, cur = stem, stem
    c = channels
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c *= 2
        s0 = s.op(CellAlignOp(out_channels=c, size=h), prev)
        s1 = s.op(ReLUConvBNOp(out_channels=c, kernel=1), cur)
        reduce_from = h if reduction and h > 1 else 0
        if reduce_from:
            h = conv_out2(h)
        states = cell_blocks(s, "reduce" if reduction else "normal", [s0, s1], nodes, OPS, c,
                             reduce_from)
        prev, cur = cur, s.op(ConcatOp(), *states[2:])
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), cur))
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "DARTS (Liu et al., ICLR 2019)", "ops": list(OPS),
        "references": {"darts_v1": "released code: 3.169414MB (the 2018-06 release's DARTS; "
                                   "not the paper's first-order cell)",
                       "darts_v2": "paper Table 1: 3.3M params; DARTS logs 3.349342MB"}})
