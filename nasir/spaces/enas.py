"""ENAS macro space (Pham et al., ICML 2018): layers that each pick an op and skip inputs.

Stem 3×3 conv + BN; layer ``i`` reads the previous layer, picks one of 6 ops (``l{i}_op``:
3×3 / 5×5 conv, 3×3 / 5×5 separable conv, 3×3 max / average pool, each behind a 1×1
conv-BN-ReLU) and, for ``i ≥ 1``, skip inputs (``l{i}_skip``: an input choice over
subsets that always holds the layer's own output). As in ENAS's code a layer's ``i`` skip
candidates are the stem and layers ``0 … i-2`` (the previous layer is its input already),
so an arc's skip bits are the subset's members. At the pooling layers (after layers
``L/3-1`` and ``2L/3-1``) every earlier output, the stem included, is factorized-reduced
so later skips can read it; the convs of reduced copies nobody reads are counted by the
analyses (as in ENAS's TF graph) and removed by ``canonicalize``. Then pooling, dropout,
linear (no ReLU before the pooling, as in ENAS's code). Two builds of the same decisions:

* search (default, ``general_child._enas_layer``): fixed width ``filters``; a conv op is
  conv-BN-ReLU after its 1×1 conv-BN-ReLU; skips are summed with the output, then BN;
* ``final=True`` (``general_child._fixed_layer``): ops are ReLU-1×1-conv-BN then
  ReLU-k×k-conv-BN (separable: depthwise k×k + 1×1, BN), skips are concatenated with the
  output and brought back to the width by ReLU-1×1-conv-BN, and the width doubles at each
  pooling layer.

``skips="bits"`` replaces each subset decision by one 0/1 decision per candidate
(``l{i}_skip{j}``: candidate ``j`` is the stem for ``j = 0``, else layer ``j - 1``), as
ENAS's controller samples them, combined by :class:`~nasir.ops.MaskedCombineOp`; a subset
decision lists ``2^i`` options, too many past ~16 layers.

``enas_cifar10`` is the 24-layer arc of ENAS's ``scripts/cifar10_macro_final.sh`` (the
paper's Fig. 7 network); it exists in builds with ``layers=24`` and
:data:`REFERENCE_OPTIONS` holds the script's setting (``final=True``, 96 filters, skip
bits).
There it has 30,947,434 parameters; the paper's Table 2 gives 21.3M, which no reading of
the released code reproduces (its fixed-arc child even builds the two separable ops as
plain convs: 42,559,392). See ``docs/spaces/enas_macro.md``.

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sp.decision("l11_skip").size, sorted(sp.references)
(23, 2048, [])
"""

from __future__ import annotations

from collections.abc import Sequence

from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
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
    MaskedCombineOp,
    MaxPool2dOp,
    PathReduceOp,
    ReLUConvBNOp,
    ReLUOp,
)
from nasir.space import Space
from nasir.spaces._cells import conv_out2

__all__ = ["ARC_OPS", "OPS", "REFERENCE_OPTIONS", "arc_assignment", "build"]

OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3")

#: ENAS's op ids in a macro arc (README of melodyguan/enas)
ARC_OPS = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3",
           "max_pool_3x3")

# melodyguan/enas scripts/cifar10_macro_final.sh: per layer, the op id then the skip bits.
ENAS_CIFAR10_ARC = (
    "0", "3 0", "0 1 0", "2 0 0 1", "2 0 0 0 0", "3 1 1 0 1 0", "2 0 0 0 0 0 1",
    "2 0 1 1 0 1 1 1", "1 0 1 1 1 0 1 0 1", "0 0 0 0 0 0 0 0 0 0", "2 0 0 0 0 0 1 0 0 0 0",
    "0 1 0 0 1 1 0 0 0 0 1 1", "2 0 1 0 0 0 0 0 1 0 1 1 0", "1 0 0 1 0 0 0 1 1 1 0 1 0 1",
    "0 1 1 0 1 0 1 0 0 0 0 0 1 0 0", "2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1",
    "2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0", "2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1",
    "3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0", "3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1",
    "0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0",
    "3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0",
    "0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0",
    "0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0")

#: the released final script's setting: --child_num_layers=24, --child_out_filters=96
#: (skip bits: a subset decision of layer 23 would list 2^23 options)
REFERENCE_OPTIONS = {"enas_cifar10": {"final": True, "layers": 24, "filters": 96,
                                      "skips": "bits"}}


def arc_assignment(layers: Sequence[str], skips: str = "subset") -> dict:
    """Assignment values from an ENAS macro arc (one ``"op skip-bits…"`` string per layer),
    for a build with ``skips`` (``"subset"``: one ``l{i}_skip`` subset per layer;
    ``"bits"``: one ``l{i}_skip{j}`` bit per candidate).

    >>> arc_assignment(["0", "3 0", "0 1 0"])
    {'l0_op': 'conv_3x3', 'l1_op': 'sep_conv_5x5', 'l1_skip': (0,), 'l2_op': 'conv_3x3', \
'l2_skip': (0, 1)}
    >>> arc_assignment(["0", "3 0", "0 1 0"], skips="bits")["l2_skip0"]
    1
    """
    out: dict = {}
    for i, layer in enumerate(layers):
        v = [int(t) for t in layer.split()]
        out[f"l{i}_op"] = ARC_OPS[v[0]]
        if i and skips == "bits":
            out.update({f"l{i}_skip{j}": bit for j, bit in enumerate(v[1:])})
        elif i:
            out[f"l{i}_skip"] = (0, *(j + 1 for j, bit in enumerate(v[1:]) if bit))
    return out


def _branch(op: str, c: int, final: bool):
    k = int(op[-1])

    def make(b: SpaceBuilder, x):
        if final and not op.endswith("pool_3x3"):
            x = b.op(ReLUConvBNOp(out_channels=c, kernel=1), x)
            if op.startswith("conv"):
                return b.op(ReLUConvBNOp(out_channels=c, kernel=k), x)
            x = b.op(Conv2dOp(out_channels=c, kernel=1),
                     b.op(DepthwiseConv2dOp(kernel=k), b.op(ReLUOp(), x)))
            return b.op(BatchNormOp(), x)
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
          layers: int = 12, dropout: float = 0.1, final: bool = False,
          skips: str = "subset") -> Space:
    """The ENAS macro space (defaults: the search setting, 12 layers at width 36)."""
    if skips not in ("subset", "bits"):
        raise SpecError(f"enas_macro: skips must be 'subset' or 'bits', got {skips!r}",
                        hint="'bits' gives one 0/1 decision per (layer, earlier layer)")
    s = SpaceBuilder("enas_macro", input_shape)
    x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=filters, kernel=3), s.input))
    h, c = int(input_shape[1]), filters
    dist = layers // 3
    pools = {dist - 1, 2 * dist - 1}
    hist = [x]  # the stem, then every layer's output
    for i in range(layers):
        out = s.choose(f"l{i}_op", {op: _branch(op, c, final) for op in OPS}, hist[-1])
        if i and skips == "bits":
            mask = tuple(s.value(f"l{i}_skip{j}", (0, 1)) for j in range(i))
            out = s.op(MaskedCombineOp(mask=mask, reduce="concat" if final else "add"),
                       out, *hist[:-1])
        elif i:
            out = s.select_any(f"l{i}_skip", [out, *hist[:-1]], required=(0,),
                               reduce="concat" if final else "add")
        if i:
            out = s.op(ReLUConvBNOp(out_channels=c, kernel=1) if final else BatchNormOp(), out)
        hist.append(out)
        if i in pools and h > 1:
            c = 2 * c if final else c
            hist = [s.op(PathReduceOp(out_channels=c), p) for p in hist]
            h = conv_out2(h)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), hist[-1]))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = {"enas_cifar10": arc_assignment(ENAS_CIFAR10_ARC, skips)} if layers == 24 else {}
    return s.build(x, references=refs, meta={
        "paper": "ENAS (Pham et al., ICML 2018), macro space", "ops": list(OPS),
        "mode": "final (fixed-arc child)" if final else "search",
        "references": {"enas_cifar10": "24 layers, final setting: paper Table 2 21.3M params "
                                       "(not reproducible from the released code)"}})
