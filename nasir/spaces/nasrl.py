"""NAS-RL macro space (Zoph & Le, ICLR 2017).

A chain of conv layers (15 by default, the paper's CIFAR-10 setting); layer ``i`` decides
its filter height and width (1/3/5/7 each), number of filters (24/36/48/64) and its
anchor points: any subset of the earlier layers whose outputs are concatenated (in depth)
with the previous layer's output to form its input (``l{i}_skip``, an input choice over
subsets that always holds the previous layer). Each layer is conv-BN-ReLU. Then pooling and
the softmax classifier.

``strides=True`` is the paper's second setting: each layer also picks its stride height
and width (``l{i}_sh``, ``l{i}_sw``: 1, 2 or 3) and anchors of different sizes are
zero-padded (bottom, right) to the largest before the concatenation
(:class:`~nasir.ops.PadConcatOp`), as the paper describes.

Not kept from the paper: layers without an input reading the image, and the final
concatenation of layers without outputs (here every layer feeds the next).

``nasrl_v1`` is the paper's 15-layer CIFAR-10 network (Fig. 7 of the arXiv version;
"no stride or pooling", 5.50 % error, 4.2M params). The figure is a drawing: the layers'
FH/FW/N and anchors here are a transcription of it (two published reimplementations
agree on the anchors but for one of layer 15's; one swaps FH/FW and reads layer 12 as
7×5 with 36 filters, which gives 3.88M). It has 4,201,630 params (paper: 4.2M).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(58, ['nasrl_v1'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import BatchNormOp, Conv2dOp, FlattenOp, GlobalAvgPoolOp, LinearOp, ReLUOp
from nasir.space import Space

__all__ = ["REFERENCES", "build", "layer_assignment"]

#: Zoph & Le 2017, Fig. 7 (paper layer numbers from 1): (FH, FW, N, anchor layers)
NASRL_V1 = (
    (3, 3, 36, ()), (3, 3, 48, (1,)), (3, 3, 36, (1, 2)), (5, 5, 36, (1, 2, 3)),
    (3, 7, 48, (3, 4)), (7, 7, 48, (2, 3, 4, 5)), (7, 7, 48, (2, 3, 4, 5, 6)),
    (7, 3, 36, (1, 6, 7)), (7, 1, 36, (1, 5, 6, 8)), (7, 7, 36, (1, 3, 4, 5, 6, 7, 8, 9)),
    (5, 7, 36, (1, 2, 5, 6, 7, 8, 9, 10)), (7, 7, 48, (1, 2, 3, 4, 6, 11)),
    (7, 5, 48, (1, 3, 6, 7, 8, 9, 10, 11, 12)), (7, 5, 48, (3, 7, 12, 13)),
    (7, 5, 48, (6, 7, 11, 12, 13, 14)))


def layer_assignment(layers) -> dict:
    """Assignment values from ``(FH, FW, N, anchors)`` per layer, anchors as paper layer
    numbers counted from 1 (each layer's previous layer must be among them).

    >>> layer_assignment([(3, 3, 36, ()), (3, 3, 48, (1,)), (5, 5, 24, (1, 2))])["l2_skip"]
    (0, 1)
    """
    out: dict = {}
    for i, (fh, fw, n, anchors) in enumerate(layers):
        out.update({f"l{i}_fh": fh, f"l{i}_fw": fw, f"l{i}_filters": n})
        if i > 1:
            # candidate 0 is the previous layer (paper layer i), candidate j the layer j
            out[f"l{i}_skip"] = tuple(sorted({0} | {j for j in anchors if j != i}))
    return out


REFERENCES = {"nasrl_v1": layer_assignment(NASRL_V1)}


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
          layers: int = 15, strides: bool = False) -> Space:
    """The NAS-RL space (default: stride 1; ``strides=True`` adds the stride decisions)."""
    s = SpaceBuilder("nasrl", input_shape)
    outs: list = []
    x = s.input
    for i in range(layers):
        if len(outs) > 1:
            x = s.select_any(f"l{i}_skip", [outs[-1], *outs[:-1]], required=(0,),
                             reduce="pad_concat" if strides else "concat", role="skip",
                             layer=i)
        fh = s.value(f"l{i}_fh", (1, 3, 5, 7), role="kernel", layer=i)
        fw = s.value(f"l{i}_fw", (1, 3, 5, 7), role="kernel", layer=i)
        stride = (s.value(f"l{i}_sh", (1, 2, 3), role="stride", layer=i),
                  s.value(f"l{i}_sw", (1, 2, 3), role="stride", layer=i)) if strides else 1
        conv = Conv2dOp(out_channels=s.value(f"l{i}_filters", (24, 36, 48, 64), role="width",
                                             layer=i),
                        kernel=(fh, fw), stride=stride)
        x = s.op(ReLUOp(), s.op(BatchNormOp(), s.op(conv, x)))
        outs.append(x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = REFERENCES if layers == len(NASRL_V1) and not strides else {}
    return s.build(x, references=refs, meta={
        "paper": "NAS-RL (Zoph & Le, ICLR 2017)", "layers": layers,
        "references": {"nasrl_v1": "paper Table 1 / Fig. 7: 15 layers, 4.2M params"}})
