"""A search space with user ops: GELU, LayerNorm and self-attention next to conv blocks.

Each layer of a depth choice (1 or 2 layers) picks a conv block (with its own kernel
choice), a conv + GELU + LayerNorm block, or a residual self-attention block over the
spatial positions; the layer index ``i`` labels the per-layer decisions. See
``docs/user_ops.md``. Where nasir takes a space from a file, name it
``docs/examples/user_op_space.py:build``; from Python:

    >>> sp = build()
    >>> sp.size, sp.raw_size
    (20, 72)
    >>> from nasir.passes.analysis import analyze
    >>> m = analyze(sp.instantiate(sp.reference("attention")))
    >>> m["params"], m["macs"]   # attention's MACs measured by torch's flop counter
    (5786, 353440)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    Conv2dOp,
    ConvBNActOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    user_op,
)
from nasir.space import Space
from nasir.types import TensorType

GELU = user_op(
    "gelu",
    module=lambda in_type: torch.nn.GELU(),
    shape=lambda in_type: in_type.shape,
    macs=lambda in_shape, out_shape: 0,
    doc="Gaussian error linear unit (element-wise, no MACs).",
)

LayerNorm = user_op(
    "layer_norm",
    module=lambda in_type, eps: torch.nn.LayerNorm(list(in_type.shape), eps=eps),
    shape=lambda in_type, eps: in_type.shape,
    attrs={"eps": 1e-5},
    doc="LayerNorm over a whole C×H×W sample, with an element-wise affine.",
)


class SpatialSelfAttention(torch.nn.Module):
    """``x + MHA(x)`` with the H·W positions as tokens of ``C`` features."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y, _ = self.attn(t, t, t, need_weights=False)
        return x + y.transpose(1, 2).reshape(n, c, h, w)


def _attention_shape(in_type: TensorType, heads: int) -> tuple[int, ...]:
    if len(in_type.shape) != 3 or in_type.shape[0] % heads:
        raise ValueError(f"needs a C×H×W map with C divisible by heads={heads}")
    return in_type.shape


# no MACs rule: torch's flop counter measures the projections and the attention matmuls
SelfAttention = user_op(
    "self_attention",
    module=lambda in_type, heads: SpatialSelfAttention(in_type.shape[0], heads),
    shape=_attention_shape,
    attrs={"heads": 2},
    doc="Residual multi-head self-attention over the spatial positions.",
)


def _layer(width: int):
    def make(b: SpaceBuilder, h: Node, i: int) -> Node:
        return b.choose(f"layer{i}", {
            "conv": lambda c, x: c.op(
                ConvBNActOp(out_channels=width, kernel=c.value(f"layer{i}_kernel", [3, 5])), x),
            "conv_gelu_ln": lambda c, x: c.op(LayerNorm(), c.op(GELU(), c.op(
                Conv2dOp(out_channels=width, kernel=3), x))),
            "attention": lambda c, x: c.op(SelfAttention(heads=2), x),
        }, h)

    return make


def build(input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10,
          width: int = 16) -> Space:
    """The example space (digits-sized by default)."""
    s = SpaceBuilder("user_op_example", input_shape)
    x = s.op(ConvBNActOp(out_channels=width, kernel=3), s.input)
    x = s.repeat("depth", [1, 2], _layer(width), x)
    x = s.op(LinearOp(out_features=num_classes), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x, references={
        "convnet": {"depth": 2, "layer0": "conv", "layer0_kernel": 3,
                    "layer1": "conv", "layer1_kernel": 5},
        "attention": {"depth": 2, "layer0": "conv_gelu_ln", "layer1": "attention"},
    }, meta={"example": "docs/examples/user_op_space.py"})
