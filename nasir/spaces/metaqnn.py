"""MetaQNN layer space (Baker et al., ICLR 2017).

MetaQNN's agent walks a state space of layers: at each step it adds a conv layer, a
pooling layer, a fully connected layer, or terminates. Here the walk is a chain of
decisions: ``u{i}_more`` (continue or terminate) before every conv unit after the first,
each unit a conv (kernel 1/3/5, 64/128/256/512 filters, stride 1, ReLU) optionally followed
by a pool (``none``, 5×5 stride 3, 3×3 stride 2, 2×2 stride 2: the paper's (size, stride)
pairs; a pool never follows a pool), then up to two FC layers (512/256/128 units, each
behind its own continue decision) and the softmax classifier. The paper's limits: at most
12 conv/pool layers (6 units here) and 2 FC layers.

The paper's two termination states (global average pooling, softmax) are the build
option ``classifier``: ``"gap"`` (default) pools globally before the FC part, ``"flatten"``
feeds the flattened representation to it (MetaQNN's ``SM`` termination).

Decisions from the paper not kept: MetaQNN allows FC only once the representation is at
most 8×8, limits conv kernels by the representation size and FC widths to non-increasing;
pools pad by k//2 here (Caffe's do not, rounding up instead), so every assignment is
valid at any input size (down to 1×1).

``metaqnn_cifar10`` is the paper's best CIFAR-10 model (Table A2: [C(512,5,1),
C(256,3,1), C(256,5,1), C(256,3,1), P(5,3), C(512,3,1), C(512,5,1), P(2,2), SM(10)],
6.92 % error, 11.26M params); :data:`REFERENCE_OPTIONS` builds it with
``classifier="flatten"``, where it has 11,368,458 params (+1.0 %: with the k//2 padding
its last map is 6×6, Caffe's is 5×5; the convs here are conv-BN-ReLU).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(27, ['metaqnn_cifar10'])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
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

__all__ = ["POOLS", "REFERENCES", "REFERENCE_OPTIONS", "build"]

#: pooling choices: name -> (kernel, stride)
POOLS = {"p5s3": (5, 3), "p3s2": (3, 2), "p2s2": (2, 2)}



def _units(convs: Sequence[tuple[int, int, str]]) -> dict:
    """Assignment values for conv units ``(filters, kernel, pool)`` and no FC layers."""
    out: dict = {"fc0_more": 0}
    for i, (f, k, pool) in enumerate(convs):
        out.update({f"u{i}_filters": f, f"u{i}_kernel": k, f"u{i}_pool": pool})
        if i:
            out[f"u{i}_more"] = 1
    if len(convs) < 6:
        out[f"u{len(convs)}_more"] = 0
    return out


# Baker et al. 2017, Table A2 (top CIFAR-10 model; C(filters, kernel, stride), P(k, s)).
REFERENCES = {"metaqnn_cifar10": _units([
    (512, 5, "none"), (256, 3, "none"), (256, 5, "none"), (256, 3, "p5s3"),
    (512, 3, "none"), (512, 5, "p2s2")])}

#: the paper's network ends in SM(10) on the flattened representation
REFERENCE_OPTIONS = {"metaqnn_cifar10": {"classifier": "flatten"}}


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
          fc_layers: int = 2, classifier: str = "gap") -> Space:
    """The MetaQNN space (CIFAR-10 limits by default)."""
    if classifier not in ("gap", "flatten"):
        raise SpecError(f"metaqnn: classifier must be 'gap' or 'flatten', got {classifier!r}",
                        hint="'flatten' is MetaQNN's softmax termination on the feature map")
    s = SpaceBuilder("metaqnn", input_shape)
    x = _unit(0, units)(s, s.input)
    if classifier == "gap":
        x = s.op(GlobalAvgPoolOp(), x)
    x = s.op(FlattenOp(), x)
    x = s.repeat("fc0_more", (0, 1), _fc(0, fc_layers), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = REFERENCES if units >= 6 and fc_layers >= 1 else {}
    return s.build(x, references=refs, meta={
        "paper": "MetaQNN (Baker et al., ICLR 2017)", "classifier": classifier,
        "limits": {"conv_pool_layers": 2 * units, "fc_layers": fc_layers},
        "references": {"metaqnn_cifar10": "paper Table A2: 11.26M params, 6.92% error "
                                          "(classifier='flatten')"}})
