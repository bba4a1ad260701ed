"""ENAS micro (cell) space (Pham et al., ICML 2018).

Normal and reduction cells of B=5 nodes; each node picks two earlier states (the two cell
inputs or earlier nodes) and one of 5 ops for each (identity, 3×3 / 5×5 separable conv,
3×3 average / max pool), then adds. The cell output concatenates the states no node
consumed and projects them back to C with ReLU-1×1-conv-BN. As in ENAS's code a reduction
layer first brings both inputs to half resolution (factorized reduce) and doubles C; its
ops do not stride. Macro network: 3×3 conv stem to 3C and BN, ``cells`` normal cells per
stage with a reduction cell between stages, ReLU, pooling, dropout, linear.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions)
40
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import BatchNormOp, CellAlignOp, CellOutputOp, Conv2dOp, ReLUOp
from nasir.space import Space
from nasir.spaces._cells import cell_blocks, conv_out2, used_refs
from nasir.spaces.nasnet import head

__all__ = ["OPS", "build"]

OPS = ("identity", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, filters: int = 20,
          cells: int = 2, blocks: int = 5, dropout: float = 0.1) -> Space:
    """The ENAS micro space (search setting: 2 normal cells per stage, C=20)."""
    s = SpaceBuilder("enas_micro", input_shape)
    x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=3 * filters, kernel=3), s.input))
    prev, h, c = x, int(input_shape[1]), filters
    for stage in range(3):
        for i in range(cells + (1 if stage else 0)):
            reduction = stage > 0 and i == 0
            if reduction:
                c *= 2
                h = conv_out2(h)
            kind = "reduce" if reduction else "normal"
            s0 = s.op(CellAlignOp(out_channels=c, size=h), prev)
            s1 = s.op(CellAlignOp(out_channels=c, size=h), x)
            states = cell_blocks(s, kind, [s0, s1], blocks, OPS, c)
            prev, x = x, s.op(CellOutputOp(used=used_refs(kind, blocks), project=c), *states)
    return s.build(head(s, s.op(ReLUOp(), x), num_classes, dropout),
                   meta={"paper": "ENAS (Pham et al., ICML 2018), micro space",
                         "ops": list(OPS)})
