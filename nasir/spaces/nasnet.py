"""NASNet cell space (Zoph et al., CVPR 2018) with NASNet-A and AmoebaNet-A (mobile).

A cell has two inputs: ``h_{i-1}`` (after ReLU-1×1-conv-BN to the cell's F filters) and
``h_{i-2}`` (brought to the same shape: factorized reduce when larger, ReLU-1×1-BN when
only wider). B=5 blocks each pick two hidden states (any earlier one) and apply one of
the paper's 13 ops to each (identity, 1×3+3×1 and 1×7+7×1 convs, 3×3 dilated conv, 3×3
average pool, 3×3/5×5/7×7 max pool, 1×1 and 3×3 convs, 3×3/5×5/7×7 separable convs), then
add. In a reduction cell, ops on the two cell inputs stride by 2. The cell output
concatenates the hidden states no block consumed (reduced to the last state's shape when
they differ) plus the states in ``{kind}_keep``: the released cells concatenate some
consumed states too (NASNet-A: ``h_{i-2}`` in the normal cell, block 1 in the reduction
cell; AmoebaNet-A: ``h_{i-2}``, and blocks 0 and 2), which the paper's rule alone cannot
express; ``keep=[]`` is the paper's rule. Normal and reduction cells each have 21
decisions, shared by all cells of a kind.

Macro network (TF-slim ``build_nasnet_mobile``): 3×3 conv stride 2 (no padding) with 32
filters and BN, two reduction stem cells at F/4 and F/2, then 3 stages of N normal cells
with a reduction cell before stages 2 and 3 (F doubles), ReLU, pooling, dropout, linear.
At 224×224, NASNet-A (N=4, F=44) has 5,289,978 params and 563.6M MACs (paper: 5.3M,
564M); AmoebaNet-A (``filters=50``, its paper's configuration, which
:data:`REFERENCE_OPTIONS` records so that ``nasir show nasnet:amoebanet_a`` builds it)
5,088,162 and 555.5M (paper: 5.1M, 555M). The 3×3,
1×3+3×1 and 1×7+7×1 convs have the 1×1 bottleneck of the TPU AmoebaNet code.
``stem='cifar'`` uses a stride-1 3×3 stem of ``3F`` filters and no stem cells.

``paper=True`` is the paper's cell space (Zoph et al. 2018, Sec. 3, Fig. 3): each block
picks two hidden states, an op for each and a combine step, ``{kind}_b{b}_combine``:
``add`` or ``concat`` (along channels; a concatenated state is 2F wide, and the ops that
read it bring it back to F as TF-slim's ops do for any width: a 1×1 conv for identity and
pools, the pointwise conv of a separable conv). There is no ``keep`` decision: the cell
output concatenates the unused states, brought to the last state's shape as TF-slim's
``_combine_unused_states`` does. That is 2 × 5B = 50 decisions. The released cells only
add but concatenate used states too, so they are not in this space; it holds them under
the paper's rule as ``nasnet_a_paper_rule`` and ``amoebanet_a_paper_rule`` (the rendering
of DARTS's ``genotypes.py``: NASNet normal concat [2..6], reduction [4, 5, 6]).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(42, ['amoebanet_a', 'nasnet_a'])
>>> sp = build(input_shape=(1, 8, 8), num_classes=10, paper=True)
>>> len(sp.decisions), sorted(sp.references)
(50, ['amoebanet_a_paper_rule', 'nasnet_a_paper_rule'])
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    AddOp,
    BatchNormOp,
    CellAlignOp,
    CellEdgeOp,
    CellOutputOp,
    ConcatOp,
    Conv2dOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    ReLUConvBNOp,
    ReLUOp,
    conv_out,
)
from nasir.space import Space
from nasir.spaces._cells import block_labels, cell_blocks, conv_out2, used_refs

__all__ = ["COMBINE", "OPS", "PAPER_REFERENCES", "REFERENCES", "REFERENCE_OPTIONS", "build",
           "build_cells", "tf_cell"]

OPS = ("identity", "conv_1x3_3x1", "conv_1x7_7x1", "dil_conv_3x3", "avg_pool_3x3",
       "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3",
       "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")

_TF_NAMES = {"none": "identity", "1x7_7x1": "conv_1x7_7x1", "1x3_3x1": "conv_1x3_3x1"}


def _tf_op(name: str) -> str:
    if name.startswith("separable_"):
        return "sep_conv_" + name.split("_")[1]
    return _TF_NAMES.get(name, name)


def tf_cell(kind: str, operations: Sequence[str], indices: Sequence[int],
            keep: Sequence[int] | None = None) -> dict:
    """Assignment values from a TF-slim cell spec (``operations``, ``hiddenstate_indices``)."""
    out: dict = {}
    for k, (op, j) in enumerate(zip(operations, indices)):
        b, x = divmod(k, 2)
        out[f"{kind}_b{b}_in_{'ab'[x]}"] = j
        out[f"{kind}_b{b}_op_{'ab'[x]}"] = _tf_op(op)
    if keep is not None:
        out[f"{kind}_keep"] = tuple(keep)
    return out


# TF-slim nets/nasnet/nasnet_utils.py and the TPU AmoebaNet model_specs.py; ``keep`` lists
# the states the released used_hiddenstates arrays concatenate although a block reads them.
REFERENCES = {
    "nasnet_a": {
        **tf_cell("normal", ["separable_5x5_2", "separable_3x3_2", "separable_5x5_2",
                             "separable_3x3_2", "avg_pool_3x3", "none", "avg_pool_3x3",
                             "avg_pool_3x3", "separable_3x3_2", "none"],
                  [0, 1, 1, 1, 0, 1, 1, 1, 0, 0], keep=[1]),
        **tf_cell("reduce", ["separable_5x5_2", "separable_7x7_2", "max_pool_3x3",
                             "separable_7x7_2", "avg_pool_3x3", "separable_5x5_2", "none",
                             "avg_pool_3x3", "separable_3x3_2", "max_pool_3x3"],
                  [0, 1, 0, 1, 0, 1, 3, 2, 2, 0], keep=[3])},
    "amoebanet_a": {
        **tf_cell("normal", ["avg_pool_3x3", "max_pool_3x3", "separable_3x3_2", "none",
                             "none", "avg_pool_3x3", "separable_3x3_2", "separable_5x5_2",
                             "avg_pool_3x3", "separable_3x3_2"],
                  [0, 0, 1, 1, 0, 1, 0, 2, 5, 0], keep=[1]),
        **tf_cell("reduce", ["separable_3x3_2", "avg_pool_3x3", "max_pool_3x3",
                             "separable_7x7_2", "max_pool_3x3", "max_pool_3x3",
                             "separable_3x3_2", "1x7_7x1", "avg_pool_3x3", "separable_7x7_2"],
                  [1, 0, 0, 2, 1, 0, 4, 0, 1, 0], keep=[2, 4])},
}

#: the combine step of a block in the paper's space (``paper=True``)
COMBINE = ("add", "concat")


def _paper_rule(ref: Mapping) -> dict:
    """A released cell in the paper's space: its ops and inputs, every combine ``add``, and
    no ``keep`` (the output concatenates the unused states only)."""
    out = {k: v for k, v in ref.items() if not k.endswith("_keep")}
    out.update({f"{kind}_b{b}_combine": "add" for kind in ("normal", "reduce")
                for b in range(5)})
    return out


#: the references of the paper's space (``paper=True``): the released cells under the
#: paper's cell-output rule
PAPER_REFERENCES = {f"{name}_paper_rule": _paper_rule(ref) for name, ref in REFERENCES.items()}

#: build options of each reference's published mobile configuration (N=4 cells per stage;
#: NASNet-A F=44 is the default, AmoebaNet-A's paper reports F=50); the paper-rule cells
#: exist in the paper's space only
REFERENCE_OPTIONS = {"nasnet_a": {}, "amoebanet_a": {"filters": 50},
                     "nasnet_a_paper_rule": {"paper": True},
                     "amoebanet_a_paper_rule": {"paper": True, "filters": 50}}


def _keep_options(blocks: int) -> list[tuple[int, ...]]:
    n = blocks + 2
    return [c for r in range(n + 1) for c in itertools.combinations(range(n), r)]


def _combine(op):
    return lambda b, x, y: b.op(op, x, y)


def _edge(op: str, channels: int, reduce_from: int):
    edge = CellEdgeOp(op=op, out_channels=channels, reduce_from=reduce_from)
    return lambda b, x: b.op(edge, x)


def _paper_blocks(s: SpaceBuilder, kind: str, states: list[Node], blocks: int,
                  ops: Sequence[str], channels: int, reduce_from: int = 0) -> list[Node]:
    """The paper's blocks: two hidden states, an op on each, then ``add`` or ``concat``
    (decisions in the controller's order: Zoph et al. 2018, Sec. 3 steps 1-5). Appends
    the block values to ``states`` (the two cell inputs first) and returns it."""
    states = list(states)
    combine = {"add": _combine(AddOp()), "concat": _combine(ConcatOp())}
    branches = {op: _edge(op, channels, reduce_from) for op in ops}
    labels = block_labels(kind, blocks)
    for b in range(blocks):
        pair = labels[2 * b: 2 * b + 2]
        with s.scope(cell=kind, block=b):
            hs = [s.select(in_label, states, slot=x) for x, (in_label, _) in zip("ab", pair)]
            terms = [s.choose(op_label, branches, h, slot=x)
                     for x, (_, op_label), h in zip("ab", pair, hs)]
            states.append(s.choose(f"{kind}_b{b}_combine", combine, *terms, role="combine"))
    return states


class _Cells:
    """Builds one cell at a time and tracks the spatial size (channels vary per assignment)."""

    def __init__(self, s: SpaceBuilder, h: int, blocks: int, ops: Sequence[str],
                 concat: str, kinds: tuple[str, str]) -> None:
        self.s, self.h, self.blocks, self.ops, self.concat = s, h, blocks, ops, concat
        self.kinds = kinds

    def cell(self, x: Node, prev: Node | None, filters: int, reduction: bool) -> Node:
        s = self.s
        kind = self.kinds[1] if reduction else self.kinds[0]
        p = x if prev is None else s.op(CellAlignOp(out_channels=filters, size=self.h), prev)
        h0 = s.op(ReLUConvBNOp(out_channels=filters, kernel=1), x)
        reduce_from = self.h if reduction and self.h > 1 else 0
        make = _paper_blocks if self.concat == "paper" else cell_blocks
        states = make(s, kind, [h0, p], self.blocks, self.ops, filters, reduce_from)
        if reduce_from:
            self.h = conv_out2(self.h)
        if self.concat == "blocks":
            return s.op(ConcatOp(), *states[2:])
        if self.concat == "paper":
            return s.op(CellOutputOp(used=used_refs(kind, self.blocks)), *states)
        keep = s.value(f"{kind}_keep", _keep_options(self.blocks), role="keep", cell=kind)
        return s.op(CellOutputOp(used=used_refs(kind, self.blocks), keep=keep), *states)


def stem_input(s: SpaceBuilder, input_shape: Sequence[int], filters: int,
               stem: str) -> tuple[Node, int]:
    """The macro network's stem conv + BN and the resolution after it: ImageNet's stride-2
    3×3 conv to 32 channels, or the CIFAR stem (3×3 conv to ``3·filters``, no stride)."""
    if stem == "imagenet":
        x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=32, kernel=3, stride=2, padding=0),
                                     s.input))
        h = conv_out(int(input_shape[1]), 3, 2, 0)
    else:
        x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=3 * filters, kernel=3), s.input))
        h = int(input_shape[1])
    return x, h


def build_cells(s: SpaceBuilder, input_shape: Sequence[int], filters: int, cells: int,
                blocks: int, ops: Sequence[str], stem: str, concat: str,
                reductions: Sequence[int], separate_reduction: bool,
                kinds: tuple[str, str] = ("normal", "reduce")) -> Node:
    """The TF-slim NASNet/PNASNet macro network up to the final ReLU (shared with PNAS).

    ``separate_reduction``: NASNet inserts a reduction cell before the cells at
    ``reductions``; PNASNet makes those cells themselves stride (``skip_reduction_layer_input``
    is then 1: a cell's ``h_{i-2}`` is the output two cells back). ``concat``: ``"unused"``
    (unused states and a ``keep`` decision), ``"paper"`` (the paper's blocks with a combine
    step, unused states only) or ``"blocks"`` (every block, PNAS).
    """
    x, h = stem_input(s, input_shape, filters, stem)
    b = _Cells(s, h, blocks, ops, concat, kinds)
    outs: list[Node | None] = [None, x]
    if stem == "imagenet":
        for i in range(2):
            x = b.cell(x, outs[-2], int(filters * 0.25 * 2 ** i), reduction=True)
            outs.append(x)
    scale = 1
    for i in range(cells):
        stride2 = i in reductions
        if stride2:
            scale *= 2
            if separate_reduction:
                x = b.cell(x, outs[-2], filters * scale, reduction=True)
                outs.append(x)
                stride2 = False
        x = b.cell(x, outs[-2], filters * scale, reduction=stride2)
        outs.append(x)
    return s.op(ReLUOp(), x)


def head(s: SpaceBuilder, x: Node, num_classes: int, dropout: float) -> Node:
    """Pooling, dropout and the classifier."""
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    return s.op(LinearOp(out_features=num_classes), x)


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          filters: int = 44, cells_per_stage: int = 4, stem: str = "imagenet",
          dropout: float = 0.5, references: Mapping[str, Mapping] | None = None,
          paper: bool = False) -> Space:
    """The NASNet space (defaults: NASNet-A mobile's macro network at 224×224).

    Stride-2 ops stop striding on 1×1 maps, so inputs down to 3×3 (ImageNet stem) or
    1×1 (CIFAR stem) instantiate. ``paper=True``: the paper's cell space (a combine step
    per block, no ``keep``; see the module docstring).
    """
    s = SpaceBuilder("nasnet", input_shape)
    n = cells_per_stage
    concat = "paper" if paper else "unused"
    x = build_cells(s, input_shape, filters, 3 * n, 5, OPS, stem, concat, (n, 2 * n), True)
    out = head(s, x, num_classes, dropout)
    if references is None:
        references = PAPER_REFERENCES if paper else REFERENCES
    meta = {"paper": "NASNet (Zoph et al., CVPR 2018)", "ops": list(OPS),
            "macro": {"filters": filters, "cells_per_stage": n, "stem": stem},
            "references": {"nasnet_a": "N=4, F=44: paper 5.3M params, 564M MACs",
                           "amoebanet_a": "AmoebaNet paper (Real et al. 2019), build with "
                                          "filters=50: 5.1M params, 555M MACs"}}
    if paper:  # the default space's text form stays as it was
        meta.update(mode="paper", combine=list(COMBINE), references={
            "nasnet_a_paper_rule": "NASNet-A's cells, output = unused states (the released "
                                   "cell also concatenates h_{i-2} / block 1)",
            "amoebanet_a_paper_rule": "AmoebaNet-A's cells (filters=50), output = unused "
                                      "states"})
    return s.build(out, references=references, meta=meta)
