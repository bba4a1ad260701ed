"""NAS-RL macro space (Zoph & Le, ICLR 2017).

A chain of conv layers (15 by default, the paper's CIFAR-10 setting); layer ``i`` decides
its filter height and width (1/3/5/7 each), number of filters (24/36/48/64) and its
anchor points: any subset of the earlier layers whose outputs are concatenated (in depth)
with the previous layer's output to form its input (``l{i}_skip``, an input choice over
subsets that always holds the previous layer). Each layer is conv-BN-ReLU. Then pooling and
the softmax classifier.

Not kept from the paper: the stride decision (the paper's "no stride or pooling" network
is the main CIFAR-10 result; with strides the concatenated anchors need padding to one
size, which nasir's ops cannot express), layers without an input reading the image, and
the final concatenation of layers without outputs (here every layer feeds the next).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions)
58
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import BatchNormOp, Conv2dOp, FlattenOp, GlobalAvgPoolOp, LinearOp, ReLUOp
from nasir.space import Space

__all__ = ["build"]


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
          layers: int = 15) -> Space:
    """The NAS-RL space (stride 1)."""
    s = SpaceBuilder("nasrl", input_shape)
    outs: list = []
    x = s.input
    for i in range(layers):
        if len(outs) > 1:
            x = s.select_any(f"l{i}_skip", [outs[-1], *outs[:-1]], required=(0,),
                             reduce="concat")
        fh = s.value(f"l{i}_fh", (1, 3, 5, 7))
        fw = s.value(f"l{i}_fw", (1, 3, 5, 7))
        conv = Conv2dOp(out_channels=s.value(f"l{i}_filters", (24, 36, 48, 64)),
                        kernel=(fh, fw))  # type: ignore[arg-type]
        x = s.op(ReLUOp(), s.op(BatchNormOp(), s.op(conv, x)))
        outs.append(x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, meta={"paper": "NAS-RL (Zoph & Le, ICLR 2017)", "layers": layers})
