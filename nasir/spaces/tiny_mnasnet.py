"""A reduced MnasNet space for the 8×8 digits images (the main job's default).

Same factorized hierarchical design as :mod:`nasir.spaces.mnasnet` — each block decides,
for all its layers at once, the conv op (``conv``, ``dconv``, ``mbconv3``, ``mbconv6``),
kernel 3 or 5, SE ratio 0 or 0.25, identity skip, filters and number of layers — but with
4 blocks instead of 7, a stride-1 stem of 16 filters, filters 8–64 and a 128-wide head, so
that a trial trains on digits and compiles with TVM in seconds on a laptop core. The full
space at 8×8 (``get_space("mnasnet", input_shape=(1, 8, 8), num_classes=10)``) has 3M-param
members that take minutes per trial on 2 cores; this one keeps the decisions and shrinks
the sizes.

>>> sp = build()
>>> len(sp.decisions), sp.size
(24, 2038431744)
>>> from nasir.passes.analysis import analyze
>>> analyze(sp.instantiate(sp.reference("small")))["params"] < 60_000
True
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
)
from nasir.space import Space
from nasir.spaces.mnasnet import block_layer

__all__ = ["FILTERS", "LAYERS", "OPS", "STRIDES", "build"]

OPS = ("conv", "dconv", "mbconv3", "mbconv6")
STRIDES = (1, 2, 1, 2)
FILTERS = ((8, 12, 16), (16, 24, 32), (24, 32, 48), (32, 48, 64))
LAYERS = ((1, 2), (1, 2), (1, 2, 3), (1, 2))


def _layer(b: int, stride: int):
    return block_layer(b, stride, FILTERS)


def _ref(ops, kernels, se, skip, filters, layers) -> dict:
    out = {}
    for b in range(len(STRIDES)):
        out.update({f"b{b + 1}_op": ops[b], f"b{b + 1}_kernel": kernels[b],
                    f"b{b + 1}_se": se[b], f"b{b + 1}_skip": skip[b],
                    f"b{b + 1}_filters": filters[b], f"b{b + 1}_layers": layers[b]})
    return out


REFERENCES = {
    # MnasNet-B1's pattern (dconv first, then inverted bottlenecks), at digits scale
    "small": _ref(("dconv", "mbconv3", "mbconv3", "mbconv6"), (3, 3, 5, 3), (0.0,) * 4,
                  (False, True, True, True), (8, 16, 24, 32), (1, 1, 2, 1)),
    "large": _ref(("dconv", "mbconv6", "mbconv6", "mbconv6"), (3, 5, 5, 3),
                  (0.0, 0.25, 0.25, 0.25), (False, True, True, True), (16, 32, 48, 64),
                  (2, 2, 3, 2)),
}


def build(input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10,
          dropout: float = 0.1, stem: int = 16, head: int = 128) -> Space:
    """The reduced MnasNet space (defaults: digits, 1×8×8 in, 10 classes)."""
    s = SpaceBuilder("tiny_mnasnet", input_shape)
    x = s.op(ConvBNActOp(out_channels=stem, kernel=3, stride=1), s.input)
    for b in range(1, len(STRIDES) + 1):
        with s.scope(block=b):
            x = s.repeat(f"b{b}_layers", LAYERS[b - 1], _layer(b, STRIDES[b - 1]), x,
                         rest=_layer(b, 1))
    x = s.op(ConvBNActOp(out_channels=head, kernel=1), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    return s.build(x, references=REFERENCES,
                   meta={"paper": "MnasNet (Tan et al., CVPR 2019), reduced for 8x8 digits"})
