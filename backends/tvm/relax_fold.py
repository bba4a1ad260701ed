"""Batch norm folded into the weights before lowering, in numpy (bound weights only).

With the weights bound as constants, TVM's ``FoldConstant`` would otherwise evaluate every
batch norm's arithmetic on them (``sqrt(var + eps)``, the ``expand_dims`` of each statistic,
a linear layer's transposed weight) by building and running one small TIR function per
expression: 7.5 of the 8 s of the Relax zero pipeline of a tiny_mnasnet network. Here a batch
norm whose input is a convolution or linear layer used by nothing else is folded into that
layer's weight and bias (``W * s``, ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var +
eps)``) — the inference form PyTorch's and ONNX Runtime's exporters use too — and any other
batch norm becomes one multiply and one add by precomputed per-channel constants.

>>> from nasir.text import parse_graph
>>> from nasir.backends.tvm.relax_lowering import prepare
>>> from nasir.backends.tvm.relax_weights import random_weights
>>> g = prepare(parse_graph('''graph @g {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = conv_bn_act(%x) {out_channels=4, kernel=3}
...   return %1
... }'''))
>>> [n.op.name for n in g.nodes()]
['input', 'conv2d', 'batch_norm', 'relu']
>>> f = fold_batch_norms(g, random_weights(g))
>>> sorted(f.biased), sorted(f.absorbed), sorted(f.affine)
(['2'], ['3'], [])
>>> f.weights["2.bias"].shape
(1, 4, 1, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasir.graph import Graph, Node

__all__ = ["Folding", "fold_batch_norms"]

_FOLDABLE = ("conv2d", "depthwise_conv2d", "linear")


@dataclass(frozen=True)
class Folding:
    """Weights after folding and what the lowering emits differently.

    ``weights``: the given weights with each folded layer's ``N.weight`` scaled and its
    ``N.bias`` set, broadcast-shaped (``(1, C, 1, 1)`` / ``(1, F)``); a batch norm left on
    its own gets ``N.scale`` and ``N.shift`` of the same shapes. ``biased``: layers that
    now add a bias; ``absorbed``: batch norms that became the identity; ``affine``: batch
    norms emitted as ``x * scale + shift``.
    """

    weights: dict[str, np.ndarray]
    biased: frozenset[str]
    absorbed: frozenset[str]
    affine: frozenset[str]


def _bn_affine(n: Node, w: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    op: Any = n.op
    var = np.asarray(w[f"{n.name}.running_var"], np.float64)
    mean = np.asarray(w[f"{n.name}.running_mean"], np.float64)
    scale = 1.0 / np.sqrt(var + float(op.eps))
    shift = -mean * scale
    if op.affine:
        gamma = np.asarray(w[f"{n.name}.weight"], np.float64)
        scale, shift = scale * gamma, shift * gamma + np.asarray(w[f"{n.name}.bias"], np.float64)
    return scale, shift


def _bshape(n: Node) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against the batched output of ``n``."""
    return (1, n.shape[0], *([1] * (len(n.shape) - 1)))


def fold_batch_norms(g: Graph, weights: Mapping[str, Any]) -> Folding:
    """Fold the batch norms of an expanded, typed graph ``g`` into ``weights`` (not
    changed; a new dict is returned inside the :class:`Folding`)."""
    uses: dict[Node, int] = {}
    for n in g.nodes():
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    out = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    biased: set[str] = set()
    absorbed: set[str] = set()
    affine: set[str] = set()
    for n in g.nodes():
        if n.op.name != "batch_norm":
            continue
        scale, shift = _bn_affine(n, weights)
        p = n.inputs[0]
        if p.op.name in _FOLDABLE and uses.get(p, 0) == 1 and p is not g.output:
            w = np.asarray(weights[f"{p.name}.weight"], np.float64)
            b = (np.asarray(weights[f"{p.name}.bias"], np.float64)
                 if f"{p.name}.bias" in weights else np.zeros(len(scale)))
            out[f"{p.name}.weight"] = (w * scale.reshape(-1, *([1] * (w.ndim - 1)))
                                       ).astype(np.float32)
            out[f"{p.name}.bias"] = (b * scale + shift).astype(np.float32).reshape(_bshape(p))
            biased.add(p.name)
            absorbed.add(n.name)
        else:
            out[f"{n.name}.scale"] = scale.astype(np.float32).reshape(_bshape(n))
            out[f"{n.name}.shift"] = shift.astype(np.float32).reshape(_bshape(n))
            affine.add(n.name)
    return Folding(out, frozenset(biased), frozenset(absorbed), frozenset(affine))
