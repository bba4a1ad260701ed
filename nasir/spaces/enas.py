"""ENAS macro space (Pham et al., ICML 2018): 12 layers, each an op and skip connections.

Stem 3×3 conv + BN; layer ``i`` picks one of 6 ops (3×3 / 5×5 conv, 3×3 / 5×5 separable
conv, each behind a 1×1 conv-BN-ReLU and followed by BN-ReLU; 3×3 max / average pool
behind a 1×1 conv-BN-ReLU) and any subset of the earlier layers as skip connections
(``l{i}_skip``: an input choice over subsets that always holds the layer's own output,
summed, then BN). At the pooling layers (after layers 3 and 7) every earlier layer is
factorized-reduced, as in ENAS's code, so later skips can read it; the convs of the
reduced copies nobody reads are counted by the analyses (as in ENAS's TF graph) and
removed by ``canonicalize``. Then ReLU, pooling, dropout, linear. The micro (cell) space
is :mod:`nasir.spaces.enas_micro`.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sp.decision("l11_skip").size
(23, 2048)
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import (
    AvgPool2dOp,
    BatchNormOp,
    Conv2dOp,
    ConvBNActOp,
    DepthwiseConv2dOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    MaxPool2dOp,
    PathReduceOp,
    ReLUOp,
)
from nasir.space import Space
from nasir.spaces._cells import conv_out2

__all__ = ["OPS", "build"]

OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3")


def _branch(op: str, c: int):
    k = int(op[-1])

    def make(b: SpaceBuilder, x):
        x = b.op(ConvBNActOp(out_channels=c, kernel=1), x)
        if op.startswith("conv"):
            return b.op(ConvBNActOp(out_channels=c, kernel=k), x)
        if op.startswith("sep"):
            x = b.op(Conv2dOp(out_channels=c, kernel=1), b.op(DepthwiseConv2dOp(kernel=k), x))
            return b.op(ReLUOp(), b.op(BatchNormOp(), x))
        pool = MaxPool2dOp if op.startswith("max") else AvgPool2dOp
        return b.op(pool(kernel=3, stride=1, padding=1), x)

    return make


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, filters: int = 36,
          layers: int = 12, dropout: float = 0.1) -> Space:
    """The ENAS macro space (search setting: fixed width ``filters``)."""
    s = SpaceBuilder("enas_macro", input_shape)
    x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=filters, kernel=3), s.input))
    h = int(input_shape[1])
    dist = layers // 3
    pools = {dist - 1, 2 * dist - 1}
    prev: list = []
    for i in range(layers):
        out = s.choose(f"l{i}_op", {op: _branch(op, filters) for op in OPS}, x)
        if prev:
            out = s.select_any(f"l{i}_skip", [out, *prev], required=(0,))
        x = s.op(BatchNormOp(), out)
        prev.append(x)
        if i in pools and h > 1:
            prev = [s.op(PathReduceOp(out_channels=filters), p) for p in prev]
            x = prev[-1]
            h = conv_out2(h)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), s.op(ReLUOp(), x)))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, meta={"paper": "ENAS (Pham et al., ICML 2018), macro space",
                            "ops": list(OPS)})
