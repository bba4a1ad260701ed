"""MobileNetV2-1.0 (Sandler et al., 2018) as a fixed reference space with no decisions.

Built like torchvision's ``mobilenet_v2``: at 224×224 and 1000 classes it has
3,504,872 parameters and 300,774,272 MACs.
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
    make_divisible,
)
from nasir.space import Space

__all__ = ["SETTINGS", "build"]

#: (expansion t, channels c, repeats n, stride s) per stage, as in the paper's Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          width: float = 1.0, dropout: float = 0.2) -> Space:
    """MobileNetV2 with a width multiplier (channels rounded to multiples of 8)."""
    s = SpaceBuilder("mobilenet_v2", input_shape)
    x = s.op(ConvBNActOp(out_channels=make_divisible(32 * width), kernel=3, stride=2,
                         act="relu6"), s.input)
    for t, c, n, stride in SETTINGS:
        out = make_divisible(c * width)
        for i in range(n):
            x = s.op(MBConvOp(out_channels=out, kernel=3, stride=stride if i == 0 else 1,
                              expand=t, act="relu6"), x)
    last = make_divisible(1280 * max(1.0, width))
    x = s.op(ConvBNActOp(out_channels=last, kernel=1, act="relu6"), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references={"mobilenet_v2_1.0": {}},
                   meta={"paper": "MobileNetV2 (Sandler et al., CVPR 2018)",
                         "source": "torchvision.models.mobilenet_v2"})
