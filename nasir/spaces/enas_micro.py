"""ENAS micro (cell) space (Pham et al., ICML 2018) with the released ENAS cells.

Normal and reduction cells of B=5 nodes; each node picks two earlier states (the two cell
inputs or earlier nodes) and one of 5 ops for each (identity, 3×3 / 5×5 separable conv,
3×3 average / max pool), then adds. Macro network: 3×3 conv stem to 3C and BN, ``cells``
normal cells per stage with a reduction cell between stages (C doubles), ReLU, pooling,
dropout, linear. Two builds of the same decisions, as ENAS's code has two child models:

* search (default, ``micro_child._enas_layer``): a reduction layer first brings both
  inputs to half resolution (factorized reduce), its ops do not stride, and the cell
  output (the states no node consumed) is projected back to C with ReLU-1×1-conv-BN;
* ``final=True`` (``micro_child._fixed_layer``, the network ENAS trains from a fixed arc):
  the second input always gets ReLU-1×1-conv-BN, a reduction cell's ops on its two inputs
  stride (a strided identity is a factorized reduce), and the cell output is the
  concatenation of the unconsumed states (reduced to the smallest size), not projected.

``enas_cifar10`` is the arc of ENAS's ``scripts/cifar10_micro_final.sh`` (the paper's
Fig. 8 cells); :data:`REFERENCE_OPTIONS` holds that script's setting (``final=True``,
5 normal cells per stage, C=36), where it has 3,894,382 parameters without the auxiliary
head: the released code's own count of that network (its ``num_vars``, which leaves the
auxiliary head out) is 3,894,372, the 10 being nasir's classifier bias. The paper's Table 2
gives 4.6M; even with the auxiliary head (494,848 more) the released code reaches 4.39M.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(40, ['enas_cifar10'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import BatchNormOp, CellAlignOp, CellOutputOp, Conv2dOp, ReLUConvBNOp, ReLUOp
from nasir.space import Space
from nasir.spaces._cells import cell_blocks, conv_out2, genotype, used_refs
from nasir.spaces.nasnet import head

__all__ = ["OPS", "REFERENCES", "REFERENCE_OPTIONS", "arc_genotype", "build"]

OPS = ("identity", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")

#: ENAS's op ids in a micro arc (``micro_child._fixed_layer``)
ARC_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")


def arc_genotype(kind: str, arc: str) -> dict:
    """Assignment values of one cell kind from an ENAS micro arc string (``index op`` pairs,
    two per node).

    >>> arc_genotype("normal", "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1")["normal_b0_op_a"]
    'avg_pool_3x3'
    """
    v = [int(t) for t in arc.split()]
    return genotype(kind, [(ARC_OPS[v[k + 1]], v[k]) for k in range(0, len(v), 2)])


# melodyguan/enas scripts/cifar10_micro_final.sh (normal arc, then reduction arc).
REFERENCES = {"enas_cifar10": {
    **arc_genotype("normal", "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"),
    **arc_genotype("reduce", "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")}}

#: the released script's final-training setting: --child_num_layers=15 (5 normal cells
#: per stage), --child_out_filters=36, fixed-arc child
REFERENCE_OPTIONS = {"enas_cifar10": {"final": True, "cells": 5, "filters": 36}}


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, filters: int = 20,
          cells: int = 2, blocks: int = 5, dropout: float = 0.1, final: bool = False) -> Space:
    """The ENAS micro space (defaults: the search setting, 2 normal cells per stage, C=20)."""
    s = SpaceBuilder("enas_micro", input_shape)
    x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=3 * filters, kernel=3), s.input))
    prev, h, c = x, int(input_shape[1]), filters
    edge_ops = {"identity": "skip_connect"} if final else None
    for stage in range(3):
        for i in range(cells + (1 if stage else 0)):
            reduction = stage > 0 and i == 0
            kind = "reduce" if reduction else "normal"
            if reduction:
                c *= 2
            if not final and reduction:
                h = conv_out2(h)
            s0 = s.op(CellAlignOp(out_channels=c, size=h), prev)
            s1 = s.op(CellAlignOp(out_channels=c, size=h), x)
            reduce_from = 0
            if final:
                s1 = s.op(ReLUConvBNOp(out_channels=c, kernel=1), s1)
                reduce_from = h if reduction and h > 1 else 0
                if reduce_from:
                    h = conv_out2(h)
            states = cell_blocks(s, kind, [s0, s1], blocks, OPS, c, reduce_from, edge_ops)
            out = CellOutputOp(used=used_refs(kind, blocks), project=0 if final else c)
            prev, x = x, s.op(out, *states)
    mode = "final (fixed-arc child)" if final else "search"
    return s.build(head(s, s.op(ReLUOp(), x), num_classes, dropout), references=REFERENCES,
                   meta={"paper": "ENAS (Pham et al., ICML 2018), micro space",
                         "ops": list(OPS), "mode": mode,
                         "references": {"enas_cifar10": "released final script: 3,894,372 params "
                                                        "(paper Table 2: 4.6M)"}})
