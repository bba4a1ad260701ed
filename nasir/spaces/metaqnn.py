"""MetaQNN layer space (Baker et al., ICLR 2017).

MetaQNN's agent walks a state space of layers: at each step it adds a conv layer, a
pooling layer, a fully connected layer, or terminates. Here the walk is a chain of
decisions: ``u{i}_more`` (continue or terminate) before every conv unit after the first,
each unit a conv (kernel 1/3/5, 64/128/256/512 filters, stride 1, ReLU) optionally followed
by a pool (``none``, 5×5 stride 3, 3×3 stride 2, 2×2 stride 2: the paper's (size, stride)
pairs; a pool never follows a pool), then up to two FC layers (512/256/128 units, each
behind its own continue decision) and the softmax classifier. The paper's limits: at most
12 conv/pool layers (6 units here) and 2 FC layers.

Decisions from the paper not kept: MetaQNN allows FC only once the representation is at
most 8×8 and limits conv kernels by the representation size; here a global average pool
precedes the FC part and pools pad by k//2, so every assignment is valid at any input
size (down to 1×1).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions)
27
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    ConvBNActOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IdentityOp,
    LinearOp,
    MaxPool2dOp,
    ReLUOp,
)
from nasir.space import Space

__all__ = ["POOLS", "build"]

#: pooling choices: name -> (kernel, stride)
POOLS = {"p5s3": (5, 3), "p3s2": (3, 2), "p2s2": (2, 2)}


def _pool(k: int, st: int):
    return lambda b, x: b.op(MaxPool2dOp(kernel=k, stride=st, padding=k // 2), x)


def _unit(i: int, units: int):
    def make(s: SpaceBuilder, x: Node) -> Node:
        conv = ConvBNActOp(out_channels=s.value(f"u{i}_filters", (64, 128, 256, 512)),
                           kernel=s.value(f"u{i}_kernel", (1, 3, 5)))
        x = s.op(conv, x)
        branches = {"none": lambda b, h: b.op(IdentityOp(), h)}
        branches.update({name: _pool(k, st) for name, (k, st) in POOLS.items()})
        x = s.choose(f"u{i}_pool", branches, x)
        if i + 1 < units:
            x = s.repeat(f"u{i + 1}_more", (0, 1), _unit(i + 1, units), x)
        return x

    return make


def _fc(j: int, fcs: int):
    def make(s: SpaceBuilder, x: Node) -> Node:
        x = s.op(ReLUOp(), s.op(LinearOp(out_features=s.value(f"fc{j}_units", (512, 256, 128))),
                                x))
        if j + 1 < fcs:
            x = s.repeat(f"fc{j + 1}_more", (0, 1), _fc(j + 1, fcs), x)
        return x

    return make


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, units: int = 6,
          fc_layers: int = 2) -> Space:
    """The MetaQNN space (CIFAR-10 limits by default)."""
    s = SpaceBuilder("metaqnn", input_shape)
    x = _unit(0, units)(s, s.input)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.repeat("fc0_more", (0, 1), _fc(0, fc_layers), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, meta={"paper": "MetaQNN (Baker et al., ICLR 2017)",
                            "limits": {"conv_pool_layers": 2 * units, "fc_layers": fc_layers}})
