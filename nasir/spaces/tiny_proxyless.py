"""The ProxylessNAS per-layer MBConv space reduced for the 8×8 digits images.

Same design as :mod:`nasir.spaces.proxyless` — every layer picks one of six MBConv ops
(kernel 3/5/7 × expansion 3/6, ReLU6, identity residual where shapes allow) or ``zero``
(the layer is skipped: only the residual remains), a group's first layer cannot be
skipped — but sized for digits as :mod:`nasir.spaces.tiny_mnasnet` is for MnasNet: a
stride-1 stem of 16 filters and an MBConv1 3×3 layer of 8, then 10 searchable layers in
four groups (2, 3, 3, 2 layers; strides 1, 2, 1, 2; widths 16, 24, 32, 48), a 1×1
"feature mix" conv of 128, global pooling and the classifier. Widths are fixed (the
paper searched each target with fixed widths), so every decision keeps types and a
weight-sharing supernet needs nothing pinned. The full space at 8×8
(``get_space("proxylessnas", input_shape=(1, 8, 8), num_classes=10)``) strides its maps to
1×1 after three groups and has 3-4M-parameter members; its mobile reference trains to
chance on digits in 5 epochs.

>>> sp = build()
>>> len(sp.decisions), sp.size
(10, 152473104)
>>> from nasir.passes.analysis import analyze
>>> analyze(sp.instantiate(sp.reference("smallest")))["params"] < analyze(
...     sp.instantiate(sp.reference("largest")))["params"]
True
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    MBConvOp,
)
from nasir.space import Space
from nasir.spaces.proxyless import OPS, _layer

__all__ = ["GROUPS", "OPS", "REFERENCES", "build"]

#: (layers, stride, width) of the searchable groups
GROUPS = ((2, 1, 16), (3, 2, 24), (3, 1, 32), (2, 2, 48))


def _labels() -> list[tuple[str, bool]]:
    return [(f"g{g}_l{i}", i > 0) for g, (n, _, _) in enumerate(GROUPS, 1) for i in range(n)]


def _ref(pick) -> dict:
    return {lb: pick(lb, skippable) for lb, skippable in _labels()}


REFERENCES = {
    "largest": _ref(lambda lb, sk: "mb6_k7"),
    "smallest": _ref(lambda lb, sk: "zero" if sk else "mb3_k3"),
    # ProxylessNAS-mobile's pattern (small kernels early, larger later, a few skips)
    "mobile_like": {"g1_l0": "mb3_k5", "g1_l1": "mb3_k3", "g2_l0": "mb3_k7",
                    "g2_l1": "mb3_k3", "g2_l2": "zero", "g3_l0": "mb6_k5",
                    "g3_l1": "mb3_k5", "g3_l2": "zero", "g4_l0": "mb6_k7", "g4_l1": "mb6_k5"},
}


def build(input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10,
          dropout: float = 0.0, stem: int = 16, first: int = 8, head: int = 128) -> Space:
    """The reduced ProxylessNAS space (defaults: digits, 1×8×8 in, 10 classes)."""
    s = SpaceBuilder("tiny_proxyless", input_shape)
    x = s.op(ConvBNActOp(out_channels=stem, kernel=3, stride=1, act="relu6"), s.input)
    x = s.op(MBConvOp(out_channels=first, kernel=3, expand=1, act="relu6"), x)
    for g, (n, stride, width) in enumerate(GROUPS, 1):
        for i in range(n):
            x = _layer(s, x, f"g{g}_l{i}", width, stride if i == 0 else 1, skippable=i > 0)
    x = s.op(ConvBNActOp(out_channels=head, kernel=1, act="relu6"), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "ProxylessNAS (Cai et al., ICLR 2019), reduced for 8x8 digits"})
