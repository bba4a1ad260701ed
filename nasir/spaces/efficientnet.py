"""EfficientNet-B0 search space (Tan & Le, ICML 2019): MnasNet's factorized space with
swish and squeeze-excite, around the B0 baseline the paper found with it.

A 32-wide swish stem, seven stages with B0's widths (16, 24, 40, 80, 112, 192, 320) and
strides (1, 2, 2, 2, 1, 2, 1), a 1280-wide 1×1 conv, pooling, dropout and the classifier.
Each stage decides, for all its layers: kernel (3/5), expansion (1, 3, 4, 6), squeeze-excite
ratio (0 or 0.25 of the block's input width, swish inside, sigmoid gate, after the
depthwise conv) and the number of layers (B0's count −1/0/+1, at least 1). Only a stage's
first layer strides; identity residuals where shapes allow.

At 224×224 the ``efficientnet_b0`` reference has exactly torchvision's 5,288,548
parameters and 385.9M conv + linear MACs (the paper quotes 0.39B FLOPs). Like torchvision's
B0, every BatchNorm keeps PyTorch's epsilon, 1e-5 (the TensorFlow original uses 1e-3), so
torchvision's weights give its outputs.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sp.reference("efficientnet_b0")["s5_layers"]
(28, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import ConvBNActOp, DropoutOp, FlattenOp, GlobalAvgPoolOp, LinearOp, MBConvOp
from nasir.space import Space

__all__ = ["B0", "REFERENCES", "build"]

#: EfficientNet-B0 (paper Table 1): expansion, kernel, stride, width, layers per stage
B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
      (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

REFERENCES = {"efficientnet_b0": {
    f"s{i}_{k}": v for i, (e, kern, _, _, n) in enumerate(B0)
    for k, v in (("kernel", kern), ("expand", e), ("se", 0.25), ("layers", n))}}


def _layer(i: int, stride: int, out: int):
    def make(s: SpaceBuilder, x: Node) -> Node:
        return s.op(MBConvOp(out_channels=out, stride=stride,
                             kernel=s.value(f"s{i}_kernel", (3, 5), role="kernel", stage=i),
                             expand=s.value(f"s{i}_expand", (1, 3, 4, 6), role="expansion",
                                            stage=i),
                             se_ratio=s.value(f"s{i}_se", (0.0, 0.25), role="se", stage=i),
                             act="swish", se_act="swish"), x)

    return make


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.2) -> Space:
    """The EfficientNet-B0 space."""
    s = SpaceBuilder("efficientnet", input_shape)
    x = s.op(ConvBNActOp(out_channels=32, kernel=3, stride=2, act="swish"), s.input)
    for i, (_, _, stride, out, n) in enumerate(B0):
        x = s.repeat(f"s{i}_layers", list(range(max(1, n - 1), n + 2)),
                     _layer(i, stride, out), x, rest=_layer(i, 1, out), stage=i)
    x = s.op(ConvBNActOp(out_channels=1280, kernel=1, act="swish"), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "EfficientNet (Tan & Le, ICML 2019)",
        "references": {"efficientnet_b0":
                       "torchvision.models.efficientnet_b0: 5,288,548 params; paper 0.39B FLOPs"}})
