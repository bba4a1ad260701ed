"""MobileNetV3 layer-wise space (Howard et al., ICCV 2019) around MobileNetV3-Large.

MobileNetV3's blocks were found by MnasNet-style platform-aware search and then tuned per
layer (NetAdapt). This space keeps the Large model's macro skeleton (a 16-wide hard-swish
stem, 15 bottleneck layers with the paper's output widths and strides, a 960-wide 1×1
conv, pooling, a 1280-wide linear layer with hard-swish, the classifier) and lets every
layer choose its kernel (3/5), expansion ratio (1, 2.3, 2.5, 3, 4, 6 of the input width),
squeeze-excite (none or a quarter of the expanded width rounded to a multiple of 8, ReLU
and hard-sigmoid, placed after the depthwise conv) and activation (ReLU / hard-swish).

At 224×224 the ``mobilenet_v3_large`` reference has exactly torchvision's 5,483,032
parameters (and 216.6M conv + linear MACs; the paper quotes 219M MAdds). Its BatchNorms use
torchvision's epsilon, 1e-3, so torchvision's weights give its outputs; their momentum stays
PyTorch's 0.1 (torchvision's 0.01 suits long ImageNet runs, not short proxy trainings).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sp.size == 2 ** 45 * 6 ** 15
(60, True)
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    HardSwishOp,
    LinearOp,
    MBConvOp,
)
from nasir.space import Space

__all__ = ["EXPANSIONS", "LARGE", "REFERENCES", "build"]

EXPANSIONS = (1, 2.3, 2.5, 3, 4, 6)
#: MobileNetV3-Large (paper Table 1): kernel, expansion ratio, out, SE, act, stride
LARGE = ((3, 1, 16, False, "relu", 1), (3, 4, 24, False, "relu", 2),
         (3, 3, 24, False, "relu", 1), (5, 3, 40, True, "relu", 2),
         (5, 3, 40, True, "relu", 1), (5, 3, 40, True, "relu", 1),
         (3, 6, 80, False, "hardswish", 2), (3, 2.5, 80, False, "hardswish", 1),
         (3, 2.3, 80, False, "hardswish", 1), (3, 2.3, 80, False, "hardswish", 1),
         (3, 6, 112, True, "hardswish", 1), (3, 6, 112, True, "hardswish", 1),
         (5, 6, 160, True, "hardswish", 2), (5, 6, 160, True, "hardswish", 1),
         (5, 6, 160, True, "hardswish", 1))

REFERENCES = {"mobilenet_v3_large": {
    f"l{i}_{k}": v for i, (kern, e, _, se, act, _) in enumerate(LARGE)
    for k, v in (("kernel", kern), ("expand", e), ("se", 0.25 if se else 0.0), ("act", act))}}


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.2) -> Space:
    """The MobileNetV3-Large layer-wise space."""
    s = SpaceBuilder("mobilenet_v3", input_shape)
    x = s.op(ConvBNActOp(out_channels=16, kernel=3, stride=2, act="hardswish", bn_eps=1e-3),
             s.input)
    for i, (_, _, out, _, _, stride) in enumerate(LARGE):
        x = s.op(MBConvOp(out_channels=out, stride=stride,
                          kernel=s.value(f"l{i}_kernel", (3, 5), role="kernel", layer=i),
                          expand=s.value(f"l{i}_expand", EXPANSIONS, role="expansion",
                                         layer=i),
                          se_ratio=s.value(f"l{i}_se", (0.0, 0.25), role="se", layer=i),
                          act=s.value(f"l{i}_act", ("relu", "hardswish"), role="activation",
                                      layer=i),
                          se_base="expanded", se_act="relu", se_gate="hardsigmoid",
                          bn_eps=1e-3), x)
    x = s.op(ConvBNActOp(out_channels=960, kernel=1, act="hardswish", bn_eps=1e-3), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(HardSwishOp(), s.op(LinearOp(out_features=1280), x))
    x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "MobileNetV3 (Howard et al., ICCV 2019)",
        "references": {"mobilenet_v3_large":
                       "torchvision mobilenet_v3_large: 5,483,032 params; paper 219M MAdds"}})
