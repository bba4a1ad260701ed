"""Primitive ops: the ones backends lower directly (defined in :mod:`~nasir.ops.spatial`,
:mod:`~nasir.ops.tensor` and :mod:`~nasir.ops.window`, re-exported here).

>>> from nasir.types import TensorType
>>> t = TensorType((32, 8, 8))
>>> op = DepthwiseConv2dOp(kernel=3)
>>> op.infer((t,)), op.params((t,), op.infer((t,))), op.macs((t,), op.infer((t,)))
(f32[32,8,8], 288, 18432)
"""

from __future__ import annotations

from nasir.ops.spatial import (
    AvgPool2dOp,
    BatchNormOp,
    Conv2dOp,
    DepthwiseConv2dOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
)
from nasir.ops.tensor import (
    AddOp,
    ConcatOp,
    CropOp,
    DropoutOp,
    FlattenOp,
    HardSigmoidOp,
    HardSwishOp,
    IdentityOp,
    InputOp,
    LinearOp,
    MulOp,
    ReLU6Op,
    ReLUOp,
    SigmoidOp,
    SwishOp,
    ZeroOp,
)
from nasir.ops.window import conv_out, pair, resolve_padding

__all__ = [
    "AddOp",
    "AvgPool2dOp",
    "BatchNormOp",
    "ConcatOp",
    "Conv2dOp",
    "CropOp",
    "DepthwiseConv2dOp",
    "DropoutOp",
    "FlattenOp",
    "GlobalAvgPoolOp",
    "HardSigmoidOp",
    "HardSwishOp",
    "IdentityOp",
    "InputOp",
    "LinearOp",
    "MaxPool2dOp",
    "MulOp",
    "ReLU6Op",
    "ReLUOp",
    "SigmoidOp",
    "SwishOp",
    "ZeroOp",
    "conv_out",
    "pair",
    "resolve_padding",
]
