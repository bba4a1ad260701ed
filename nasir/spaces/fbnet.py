"""FBNet layer-wise space (Wu et al., CVPR 2019), the ProxylessNAS-style per-layer space
with FBNet's own candidates.

Stem 3×3 conv (16, stride 2), 22 searchable layers in seven stages (1, 4, 4, 4, 4, 4, 1
layers; widths 16, 24, 32, 64, 112, 184, 352; strides 1, 2, 2, 2, 1, 2, 1), a 1×1 head
conv, pooling and the classifier. Each layer picks one of the paper's nine candidates
(``k{3,5}_e{1,3,6}``, the grouped ``k{3,5}_e1_g2`` and ``skip``) or, in this variant, the
cascaded-depthwise ``k3_sep_e{1,3,6}`` blocks of the released ``fbnet_builder`` (two 3×3
depthwise convs, the ``ir_k3_sep`` lines commented out in FBNet-B and -C).

Expansion-1 convention: by default an expansion-1 block has no 1×1 expand conv (depthwise,
then project), as in ``mobile-cv``'s ``IRFBlock`` (``pw`` only when the width changes);
then FBNet-B has 4,801,368 params and 291.0M MACs, within 2 % of the released model's
4.8M / 295.6M and the paper's 295M. ``e1_expand=True`` keeps the 1×1 conv as
``maskrcnn-benchmark``'s ``fbnet_builder`` does (FBNet-B: 4,863,288 params, 306.2M MACs).
The head width is a decision (1504 for FBNet-A, 1984 for -B and -C, as released).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(23, ['fbnet_a', 'fbnet_b', 'fbnet_c'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FBNetSkipOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IRFBlockOp,
    LinearOp,
)
from nasir.space import Space

__all__ = ["OPS", "REFERENCES", "STAGES", "build"]

#: (layers, width, stride of the first layer) per stage
STAGES = ((1, 16, 1), (4, 24, 2), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))
#: candidate name -> (kernel, expansion, groups, cascade); ``skip`` has none
CANDIDATES = {
    "k3_e1": (3, 1, 1, False), "k3_e1_g2": (3, 1, 2, False), "k3_e3": (3, 3, 1, False),
    "k3_e6": (3, 6, 1, False), "k5_e1": (5, 1, 1, False), "k5_e1_g2": (5, 1, 2, False),
    "k5_e3": (5, 3, 1, False), "k5_e6": (5, 6, 1, False), "k3_sep_e1": (3, 1, 1, True),
    "k3_sep_e3": (3, 3, 1, True), "k3_sep_e6": (3, 6, 1, True),
}
OPS = (*CANDIDATES, "skip")


def _block(out: int, stride: int, spec, e1_expand: bool):
    k, e, g, cascade = spec
    op = IRFBlockOp(out_channels=out, kernel=k, stride=stride, expand=e, groups=g,
                    cascade=cascade, always_expand=e1_expand)
    return lambda b, x: b.op(op, x)


def _layer(s: SpaceBuilder, x: Node, label: str, out: int, stride: int, e1: bool) -> Node:
    branches = {name: _block(out, stride, spec, e1) for name, spec in CANDIDATES.items()}
    branches["skip"] = lambda b, h: b.op(FBNetSkipOp(out_channels=out, stride=stride), h)
    return s.choose(label, branches, x)


def _labels() -> list[str]:
    return [f"s{st}_l{i}" for st, (n, _, _) in enumerate(STAGES) for i in range(n)]


def _ref(head: int, ops: str) -> dict:
    out: dict = dict(zip(_labels(), ops.split()))
    out["head_width"] = head
    return out


# The released definitions (facebookresearch mobile-cv / maskrcnn-benchmark fbnet_modeldef).
REFERENCES = {
    "fbnet_a": _ref(1504, "skip  k3_e3 k3_e1 skip skip  k5_e6 k3_e3 k5_e1 k3_e3 "
                          "k5_e6 k5_e3 k5_e1_g2 k5_e6  k3_e6 k5_e1_g2 k5_e3 k3_e1_g2 "
                          "k5_e6 k5_e6 k5_e3 k5_e6  k5_e6"),
    "fbnet_b": _ref(1984, "k3_e1  k3_e6 k5_e1 k3_e1 k3_e1  k5_e6 k5_e3 k3_e6 k5_e6 "
                          "k5_e6 k5_e6 skip k5_e3  k5_e6 k3_e1 k5_e1 k5_e3 "
                          "k5_e6 k5_e1 k5_e6 k5_e6  k3_e6"),
    "fbnet_c": _ref(1984, "k3_e1  k3_e6 skip k3_e1 k3_e1  k5_e6 k5_e3 k5_e6 k3_e6 "
                          "k5_e6 k5_e3 k5_e6 k5_e6  k5_e6 k5_e6 k5_e6 k5_e3 "
                          "k5_e6 k5_e6 k5_e6 k5_e6  k3_e6"),
}


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.0, e1_expand: bool = False) -> Space:
    """The FBNet space; stride-2 layers keep 1×1 maps on tiny inputs."""
    s = SpaceBuilder("fbnet", input_shape)
    x = s.op(ConvBNActOp(out_channels=16, kernel=3, stride=2), s.input)
    for st, (n, width, stride) in enumerate(STAGES):
        for i in range(n):
            x = _layer(s, x, f"s{st}_l{i}", width, stride if i == 0 else 1, e1_expand)
    x = s.op(ConvBNActOp(out_channels=s.value("head_width", (1504, 1984)), kernel=1), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "FBNet (Wu et al., CVPR 2019)",
        "expansion_1": "1x1 expand conv kept" if e1_expand else "no 1x1 expand conv",
        "references": {"fbnet_a": "paper 4.3M / 249M MACs (released head 1504)",
                       "fbnet_b": "released 4.8M / 295.6M MACs (paper 4.5M / 295M)",
                       "fbnet_c": "paper 5.5M / 375M MACs"}})
