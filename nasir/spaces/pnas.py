"""PNAS cell space (Liu et al., ECCV 2018) with PNASNet-5 (mobile).

NASNet's cell structure (see :mod:`nasir.spaces.nasnet`) with PNAS's changes: 8 ops (3×3,
5×5, 7×7 separable convs, 1×7+7×1 conv, identity, 3×3 average and max pool, 3×3 dilated
conv), a single cell type (a reduction is the same cell with stride 2, so the 20 decisions
are shared by every cell) and the cell output concatenating all B=5 blocks.

Macro network (TF-slim ``build_pnasnet_mobile``): NASNet's ImageNet stem (32-filter 3×3
stride-2 conv, two stride-2 stem cells at F/4, F/2), 9 cells with F=54 where cells 3 and 6
stride and double F, ReLU, pooling, dropout, linear. At 224×224 PNASNet-5 has 5.1M params
and 588M MACs per the paper's Table 4 (mobile setting).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(20, ['pnasnet_5'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.space import Space
from nasir.spaces.nasnet import build_cells, head, tf_cell

__all__ = ["OPS", "REFERENCES", "build"]

OPS = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_1x7_7x1", "identity",
       "avg_pool_3x3", "max_pool_3x3", "dil_conv_3x3")

# TF-slim nets/nasnet/pnasnet.py, PNasNetNormalCell.
REFERENCES = {"pnasnet_5": tf_cell(
    "cell", ["separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
             "separable_5x5_2", "separable_3x3_2", "separable_3x3_2", "max_pool_3x3",
             "separable_3x3_2", "none"], [1, 1, 0, 0, 0, 0, 4, 0, 1, 0])}


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          filters: int = 54, cells: int = 9, dropout: float = 0.5) -> Space:
    """The PNAS space (defaults: PNASNet-5 mobile at 224×224; inputs down to 3×3)."""
    s = SpaceBuilder("pnas", input_shape)
    red = (cells // 3, 2 * cells // 3)
    x = build_cells(s, input_shape, filters, cells, 5, OPS, "imagenet", "blocks", red, False,
                    kinds=("cell", "cell"))
    out = head(s, x, num_classes, dropout)
    return s.build(out, references=REFERENCES, meta={
        "paper": "PNAS (Liu et al., ECCV 2018)", "ops": list(OPS),
        "references": {"pnasnet_5": "paper Table 4 (mobile): 5.1M params, 588M MACs"}})
