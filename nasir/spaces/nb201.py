"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell has 4 nodes; each of the 6 edges j→i (j < i) picks one of five ops. The macro
skeleton: 3×3 conv stem, 5 cells at C, a residual reduction block, 5 cells at 2C, another
reduction, 5 cells at 4C, BN-ReLU, global pooling, linear. All 15 cells share the 6 edge
decisions, so the space has 5**6 = 15,625 assignments.
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.graph import Node
from nasir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    Conv2dOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IdentityOp,
    LinearOp,
    ReLUConvBNOp,
    ReLUOp,
    ResBlockOp,
    ZeroOp,
)
from nasir.space import Space

__all__ = ["EDGES", "OPS", "arch_string", "build", "from_arch_string"]

#: NB201 op names in the order of the options
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: edges (source, target) in NB201 arch-string order
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def _label(j: int, i: int) -> str:
    return f"edge_{j}_{i}"


def arch_string(a) -> str:
    """NB201 arch string of an assignment.

    >>> arch_string({_label(j, i): "nor_conv_3x3" for j, i in EDGES})[:24]
    '|nor_conv_3x3~0|+|nor_co'
    """
    parts = []
    for i in (1, 2, 3):
        parts.append("|" + "|".join(f"{a[_label(j, i)]}~{j}" for j in range(i)) + "|")
    return "+".join(parts)


def from_arch_string(s: str) -> dict[str, str]:
    """Assignment values from an NB201 arch string."""
    out = {}
    for i, node in enumerate(s.split("+"), start=1):
        for tok in node.strip("|").split("|"):
            op, _, j = tok.partition("~")
            out[_label(int(j), i)] = op
    return out


def _edge_branches(channels: int):
    return {
        "none": lambda b, x: b.op(ZeroOp(), x),
        "skip_connect": lambda b, x: b.op(IdentityOp(), x),
        "nor_conv_1x1": lambda b, x: b.op(ReLUConvBNOp(out_channels=channels, kernel=1), x),
        "nor_conv_3x3": lambda b, x: b.op(ReLUConvBNOp(out_channels=channels, kernel=3), x),
        "avg_pool_3x3": lambda b, x: b.op(
            AvgPool2dOp(kernel=3, stride=1, padding=1, count_include_pad=False), x),
    }


def _cell(s: SpaceBuilder, x: Node, channels: int) -> Node:
    nodes = [x]
    for i in (1, 2, 3):
        terms = [s.choose(_label(j, i), _edge_branches(channels), nodes[j]) for j in range(i)]
        nodes.append(terms[0] if len(terms) == 1 else s.op(AddOp(), *terms))
    return nodes[3]


REFERENCES = {
    "resnet": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",
    "best_cifar10": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "all_conv3x3": "+".join("|" + "|".join(f"nor_conv_3x3~{j}" for j in range(i)) + "|"
                            for i in (1, 2, 3)),
    "all_skip": "+".join("|" + "|".join(f"skip_connect~{j}" for j in range(i)) + "|"
                         for i in (1, 2, 3)),
}


def cell_space(channels: int = 4, resolution: int = 4) -> Space:
    """One NB201 cell alone, with the same six decisions: the space's hash view."""
    s = SpaceBuilder("nb201_cell", (channels, resolution, resolution))
    return s.build(_cell(s, s.input, channels))


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, channels: int = 16,
          cells_per_stage: int = 5) -> Space:
    """The NB201 space; defaults are the benchmark's CIFAR-10 network."""
    s = SpaceBuilder("nb201", input_shape)
    x = s.op(Conv2dOp(out_channels=channels, kernel=3), s.input)
    x = s.op(BatchNormOp(), x)
    c = channels
    for stage in range(3):
        if stage:
            c *= 2
            x = s.op(ResBlockOp(out_channels=c, stride=2), x)
        for _ in range(cells_per_stage):
            x = _cell(s, x, c)
    x = s.op(ReLUOp(), s.op(BatchNormOp(), x))
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(
        x,
        references={k: from_arch_string(v) for k, v in REFERENCES.items()},
        meta={"paper": "NAS-Bench-201 (Dong & Yang, ICLR 2020)", "ops": list(OPS),
              "edges": [list(e) for e in EDGES]},
        view=cell_space(),
    )
