"""MnasNet factorized hierarchical search space (Tan et al., CVPR 2019).

A fixed stem (3×3 conv, 32 filters, stride 2) and head (1×1 conv to 1280, pooling, linear)
around 7 blocks. Each block i decides, for all of its layers at once: the conv op
(``conv`` regular, ``dconv`` depthwise-separable, ``mbconv3`` / ``mbconv6`` inverted
bottlenecks), kernel 3 or 5, SE ratio 0 or 0.25, skip (identity residual where shapes
allow, or none), filters, and number of layers. Only a block's first layer strides.

Filter and layer domains are MobileNetV2's per-block values scaled by 0.75 / 1.0 / 1.25
(filters) and −1 / 0 / +1 (layers), widened where MnasNet-A1 and -B1 need it
(112 and 192 filters).

The paper's SkipOp has three options, "pooling, identity residual, or no skip"; the
released code (``tensorflow/tpu`` ``mnasnet_model.py``, ``id_skip``) has only the
identity residual, which is the default space's ``b{i}_skip`` ∈ {False, True}.
``paper=True`` makes it ``b{i}_skip`` ∈ {"none", "identity", "pool"}: ``pool`` is the
identity residual where shapes allow and otherwise a shortcut that average-pools the
input to the layer's stride and projects it to the layer's width with a 1×1 conv + BN
(nasir's reading; see :func:`nasir.ops.composite.residual`). MnasNet-A1 and -B1 use no
pooling skip, so both stay exact there.

>>> sp = build(input_shape=(3, 32, 32), num_classes=10, paper=True)
>>> sp.decision("b2_skip").options, sorted(sp.references)
(('none', 'identity', 'pool'), ['mnasnet_a1', 'mnasnet_b1'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    ConvBlockOp,
    ConvBNActOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    MBConvOp,
)
from nasir.space import Space

__all__ = ["FILTERS", "LAYERS", "OPS", "PAPER_SKIPS", "STRIDES", "block_layer", "build"]

OPS = ("conv", "dconv", "mbconv3", "mbconv6")
#: the paper's SkipOp options (``paper=True``); the default space has False / True
PAPER_SKIPS = ("none", "identity", "pool")
STRIDES = (1, 2, 2, 2, 1, 2, 1)
FILTERS = ((8, 16, 24), (16, 24, 32), (24, 32, 40), (48, 64, 80), (72, 96, 112, 120),
           (120, 160, 192, 200), (240, 320, 400))
LAYERS = ((1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (2, 3, 4), (2, 3, 4), (1, 2))


def block_layer(b: int, stride: int, filters: Sequence[Sequence[int]] = FILTERS,
                skips: Sequence = (False, True)):
    """Region function of one layer of block ``b``: the block's op choice with its shared
    filters / kernel / SE / skip decisions (``filters[b - 1]`` is the filter domain,
    ``skips`` the skip domain). Call it inside ``s.scope(block=b)`` (as the builders do)
    so that the decisions know their block."""
    f, k, se, skip = (f"b{b}_{n}" for n in ("filters", "kernel", "se", "skip"))

    def make(s: SpaceBuilder, x: Node) -> Node:
        F, K, SE, SK = s.value(f, filters[b - 1], role="width"), \
            s.value(k, (3, 5), role="kernel"), s.value(se, (0.0, 0.25), role="se"), \
            s.value(skip, tuple(skips), role="skip")
        branches = {
            "conv": lambda t, h: t.op(ConvBlockOp(out_channels=F, kernel=K, stride=stride,
                                                  se_ratio=SE, skip=SK), h),
            "dconv": lambda t, h: t.op(MBConvOp(out_channels=F, kernel=K, stride=stride,
                                                expand=1, se_ratio=SE, skip=SK), h),
            "mbconv3": lambda t, h: t.op(MBConvOp(out_channels=F, kernel=K, stride=stride,
                                                  expand=3, se_ratio=SE, skip=SK), h),
            "mbconv6": lambda t, h: t.op(MBConvOp(out_channels=F, kernel=K, stride=stride,
                                                  expand=6, se_ratio=SE, skip=SK), h),
        }
        return s.choose(f"b{b}_op", branches, x)

    return make


def _ref(ops, kernels, se, skip, filters, layers) -> dict:
    out = {}
    for b in range(7):
        out.update({f"b{b + 1}_op": ops[b], f"b{b + 1}_kernel": kernels[b],
                    f"b{b + 1}_se": se[b], f"b{b + 1}_skip": skip[b],
                    f"b{b + 1}_filters": filters[b], f"b{b + 1}_layers": layers[b]})
    return out


REFERENCES = {
    # Paper Figure 7(a); TF reference blocks 'r1_k3_s11_e1_i32_o16_noskip' …
    "mnasnet_a1": _ref(
        ("dconv", "mbconv6", "mbconv3", "mbconv6", "mbconv6", "mbconv6", "mbconv6"),
        (3, 3, 5, 3, 3, 5, 3), (0.0, 0.0, 0.25, 0.0, 0.25, 0.25, 0.0),
        (False, True, True, True, True, True, True),
        (16, 24, 40, 80, 112, 160, 320), (1, 2, 3, 4, 2, 3, 1)),
    # torchvision mnasnet1_0
    "mnasnet_b1": _ref(
        ("dconv", "mbconv3", "mbconv3", "mbconv6", "mbconv6", "mbconv6", "mbconv6"),
        (3, 3, 5, 5, 3, 5, 3), (0.0,) * 7, (False, True, True, True, True, True, True),
        (16, 24, 40, 80, 96, 192, 320), (1, 3, 3, 3, 2, 4, 1)),
}


def _paper_skips(ref: dict) -> dict:
    return {k: (("identity" if v else "none") if k.endswith("_skip") else v)
            for k, v in ref.items()}


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.2, paper: bool = False) -> Space:
    """The MnasNet space at a given input shape and class count (``paper=True``: SkipOp
    with the paper's pooling option; see the module docstring)."""
    skips = PAPER_SKIPS if paper else (False, True)
    s = SpaceBuilder("mnasnet", input_shape)
    x = s.op(ConvBNActOp(out_channels=32, kernel=3, stride=2), s.input)
    for b in range(1, 8):
        with s.scope(block=b):
            x = s.repeat(f"b{b}_layers", LAYERS[b - 1],
                         block_layer(b, STRIDES[b - 1], skips=skips), x,
                         rest=block_layer(b, 1, skips=skips))
    x = s.op(ConvBNActOp(out_channels=1280, kernel=1), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = {k: _paper_skips(v) for k, v in REFERENCES.items()} if paper else REFERENCES
    meta: dict = {"paper": "MnasNet (Tan et al., CVPR 2019)",
                  "references": {"mnasnet_a1": "paper Fig. 7(a): 3.9M params, 312M MACs",
                                 "mnasnet_b1": "torchvision.models.mnasnet1_0"}}
    if paper:  # the default space's text form stays as it was
        meta.update(mode="paper", skips=list(PAPER_SKIPS))
    return s.build(x, references=refs, meta=meta)
