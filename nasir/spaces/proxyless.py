"""ProxylessNAS per-layer MBConv space (Cai et al., ICLR 2019).

A fixed stem (3×3 conv stride 2, ReLU6) and a first MBConv1 3×3 layer, then 21 searchable
layers in six groups (4, 4, 4, 4, 4, 1 layers; strides 2, 2, 2, 1, 2, 1; only a group's
first layer strides). Each layer picks one of six MBConv ops (kernel 3/5/7 × expansion 3/6,
ReLU6, identity residual where shapes allow) or ``zero`` (the layer is skipped: only the
residual remains), except a group's first layer, which cannot be skipped. Then a 1×1
"feature mix" conv, global pooling and the classifier.

The paper searched each hardware target with fixed widths; the three released networks use
different backbone widths, so each group's width (and the stem, first layer and head widths)
is a value decision whose options are the widths of ProxylessNAS-mobile, -GPU and -CPU.
At 224×224 the references match the released models exactly (conv + linear MACs,
BN γ/β counted): mobile 4,080,512 params, GPU 7,119,848, CPU 4,361,648.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(29, ['proxyless_cpu', 'proxyless_gpu', 'proxyless_mobile'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IdentityOp,
    LinearOp,
    MBConvOp,
)
from nasir.space import Space

__all__ = ["GROUPS", "OPS", "REFERENCES", "build"]

#: layer op names: ``mb{expansion}_k{kernel}`` and ``zero``
OPS = ("mb3_k3", "mb3_k5", "mb3_k7", "mb6_k3", "mb6_k5", "mb6_k7", "zero")
#: (layers, stride, width options) of the searchable groups
GROUPS = ((4, 2, (32,)), (4, 2, (40, 48, 56)), (4, 2, (80, 88, 112)), (4, 1, (96, 104, 128)),
          (4, 2, (192, 216, 256)), (1, 1, (320, 360, 432)))
STEM = (32, 40)
FIRST = (16, 24)
HEAD = (1280, 1432, 1728)


def _mb(out, stride, k, e):
    return lambda b, x: b.op(MBConvOp(out_channels=out, kernel=k, stride=stride, expand=e,
                                      act="relu6"), x)


def _layer(s: SpaceBuilder, x: Node, label: str, out, stride: int, skippable: bool) -> Node:
    branches = {f"mb{e}_k{k}": _mb(out, stride, k, e) for e in (3, 6) for k in (3, 5, 7)}
    if skippable:
        branches["zero"] = lambda b, h: b.op(IdentityOp(), h)
    return s.choose(label, branches, x)


def _ref(stem, first, widths, head, ops) -> dict:
    out = {"stem_width": stem, "first_width": first, "head_width": head}
    out.update({f"g{g}_width": w for g, w in enumerate(widths, 1) if len(GROUPS[g - 1][2]) > 1})
    k = 0
    for g, (n, _, _) in enumerate(GROUPS, 1):
        for i in range(n):
            out[f"g{g}_l{i}"] = ops[k]
            k += 1
    return out


def _ops(kernels, expansions, residual) -> list[str]:
    return [f"mb{e}_k{k}" if r else "zero" for k, e, r in zip(kernels, expansions, residual)]


# Released net configs of the official repo (mit-han-lab/proxylessnas), layer by layer.
REFERENCES = {
    "proxyless_mobile": _ref(32, 16, (32, 40, 80, 96, 192, 320), 1280, _ops(
        (5, 3, 3, 3, 7, 3, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7),
        (3, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 6, 3, 3, 6),
        (1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))),
    "proxyless_gpu": _ref(40, 24, (32, 56, 112, 128, 256, 432), 1728, _ops(
        (5, 3, 3, 3, 7, 3, 3, 3, 7, 5, 5, 5, 5, 3, 3, 5, 7, 7, 7, 5, 7),
        (3, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 6, 6, 6, 6),
        (1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1))),
    "proxyless_cpu": _ref(40, 24, (32, 48, 88, 104, 216, 360), 1432, _ops(
        (3, 3, 3, 3, 3, 3, 3, 5, 3, 3, 3, 3, 5, 3, 3, 3, 5, 5, 5, 3, 5),
        (6, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6),
        (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))),
}


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.0) -> Space:
    """The ProxylessNAS space; at inputs down to 1×1 the stride-2 convs keep 1×1 maps."""
    s = SpaceBuilder("proxylessnas", input_shape)
    x = s.op(ConvBNActOp(out_channels=s.value("stem_width", STEM, role="width"), kernel=3, stride=2,
                         act="relu6"), s.input)
    x = s.op(MBConvOp(out_channels=s.value("first_width", FIRST, role="width"), kernel=3, expand=1,
                      act="relu6"), x)
    for g, (n, stride, widths) in enumerate(GROUPS, 1):
        w = widths[0] if len(widths) == 1 else s.value(f"g{g}_width", widths, role="width",
                                                                stage=g)
        for i in range(n):
            x = _layer(s, x, f"g{g}_l{i}", w, stride if i == 0 else 1, skippable=i > 0)
    x = s.op(ConvBNActOp(out_channels=s.value("head_width", HEAD, role="width"), kernel=1,
                         act="relu6"), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES, meta={
        "paper": "ProxylessNAS (Cai et al., ICLR 2019)",
        "references": {"proxyless_mobile": "released net: 4,080,512 params / 4.08M, 320.4M MACs",
                       "proxyless_gpu": "released net: 7,119,848 params / 7.12M, 465.3M MACs",
                       "proxyless_cpu": "released net: 4,361,648 params / 4.36M, 439.2M MACs"}})
