"""FBNet layer-wise space (Wu et al., CVPR 2019), the ProxylessNAS-style per-layer space
with FBNet's own candidates.

Stem 3×3 conv (16, stride 2), 22 searchable layers in seven stages (1, 4, 4, 4, 4, 4, 1
layers; widths 16, 24, 32, 64, 112, 184, 352; strides 1, 2, 2, 2, 1, 2, 1), a 1×1 head
conv, pooling and the classifier. Each layer picks one of the paper's nine candidates
(``k{3,5}_e{1,3,6}``, the grouped ``k{3,5}_e1_g2`` and ``skip``) or, in this variant, the
cascaded-depthwise ``k3_sep_e{1,3,6}`` blocks of the released ``fbnet_builder`` (two 3×3
depthwise convs, the ``ir_k3_sep`` lines commented out in FBNet-B and -C).

Expansion-1 convention: by default an expansion-1 block has no 1×1 expand conv (depthwise,
then project), as in ``mobile-cv``'s ``IRFBlock`` (``pw`` only when the width changes);
then FBNet-B has 4,801,368 params and 291.0M MACs, within 2 % of the released model's
4.8M / 295.6M and the paper's 295M. ``e1_expand=True`` keeps the 1×1 conv as
``maskrcnn-benchmark``'s ``fbnet_builder`` does (FBNet-B: 4,863,288 params, 306.2M MACs).
The head width is a decision (1504 for FBNet-A, 1984 for -B and -C, as released).

``paper=True`` is the paper's search space: each layer picks one of the nine candidates of
the paper's Table 2 (:data:`PAPER_OPS`, no ``k3_sep``) and the head is fixed (the 1×1 conv
of the paper's Table 1, 1984 wide; ``head_width=`` fixes another width), so 22 decisions
and 9^22 architectures. References are kept where that space holds them: FBNet-B and -C
(head 1984), or FBNet-A with ``head_width=1504`` (its released head).

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(23, ['fbnet_a', 'fbnet_b', 'fbnet_c'])
>>> sp = build(input_shape=(1, 8, 8), num_classes=10, paper=True)
>>> len(sp.decisions), sp.size == 9 ** 22, sorted(sp.references)
(22, True, ['fbnet_b', 'fbnet_c'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
from nasir.graph import Node
from nasir.ops import (
    ConvBNActOp,
    DropoutOp,
    FBNetSkipOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IRFBlockOp,
    LinearOp,
)
from nasir.space import Space

__all__ = ["OPS", "PAPER_OPS", "REFERENCES", "STAGES", "build"]

#: (layers, width, stride of the first layer) per stage
STAGES = ((1, 16, 1), (4, 24, 2), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))
#: candidate name -> (kernel, expansion, groups, cascade); ``skip`` has none
CANDIDATES = {
    "k3_e1": (3, 1, 1, False), "k3_e1_g2": (3, 1, 2, False), "k3_e3": (3, 3, 1, False),
    "k3_e6": (3, 6, 1, False), "k5_e1": (5, 1, 1, False), "k5_e1_g2": (5, 1, 2, False),
    "k5_e3": (5, 3, 1, False), "k5_e6": (5, 6, 1, False), "k3_sep_e1": (3, 1, 1, True),
    "k3_sep_e3": (3, 3, 1, True), "k3_sep_e6": (3, 6, 1, True),
}
OPS = (*CANDIDATES, "skip")
#: the paper's nine candidate blocks (Wu et al. 2019, Table 2)
PAPER_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6",
             "skip")
#: the paper's fixed head width (Table 1: 1×1 conv, 1984 channels)
PAPER_HEAD = 1984


def _block(out: int, stride: int, spec, e1_expand: bool):
    k, e, g, cascade = spec
    op = IRFBlockOp(out_channels=out, kernel=k, stride=stride, expand=e, groups=g,
                    cascade=cascade, always_expand=e1_expand)
    return lambda b, x: b.op(op, x)


def _layer(s: SpaceBuilder, x: Node, label: str, out: int, stride: int, e1: bool,
           ops: tuple[str, ...]) -> Node:
    branches = {name: _block(out, stride, CANDIDATES[name], e1) for name in ops
                if name != "skip"}
    branches["skip"] = lambda b, h: b.op(FBNetSkipOp(out_channels=out, stride=stride), h)
    return s.choose(label, branches, x)


def _labels() -> list[str]:
    return [f"s{st}_l{i}" for st, (n, _, _) in enumerate(STAGES) for i in range(n)]


def _ref(head: int, ops: str) -> dict:
    out: dict = dict(zip(_labels(), ops.split()))
    out["head_width"] = head
    return out


# The released definitions (facebookresearch mobile-cv / maskrcnn-benchmark fbnet_modeldef).
REFERENCES = {
    "fbnet_a": _ref(1504, "skip  k3_e3 k3_e1 skip skip  k5_e6 k3_e3 k5_e1 k3_e3 "
                          "k5_e6 k5_e3 k5_e1_g2 k5_e6  k3_e6 k5_e1_g2 k5_e3 k3_e1_g2 "
                          "k5_e6 k5_e6 k5_e3 k5_e6  k5_e6"),
    "fbnet_b": _ref(1984, "k3_e1  k3_e6 k5_e1 k3_e1 k3_e1  k5_e6 k5_e3 k3_e6 k5_e6 "
                          "k5_e6 k5_e6 skip k5_e3  k5_e6 k3_e1 k5_e1 k5_e3 "
                          "k5_e6 k5_e1 k5_e6 k5_e6  k3_e6"),
    "fbnet_c": _ref(1984, "k3_e1  k3_e6 skip k3_e1 k3_e1  k5_e6 k5_e3 k5_e6 k3_e6 "
                          "k5_e6 k5_e3 k5_e6 k5_e6  k5_e6 k5_e6 k5_e6 k5_e3 "
                          "k5_e6 k5_e6 k5_e6 k5_e6  k3_e6"),
}


def _fixed_head_refs(head: int, ops: tuple[str, ...]) -> dict:
    """The references a fixed-head space holds (their head width is that head)."""
    out = {}
    for name, ref in REFERENCES.items():
        if ref["head_width"] == head and all(v in ops for k, v in ref.items()
                                             if k != "head_width"):
            out[name] = {k: v for k, v in ref.items() if k != "head_width"}
    return out


def build(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000,
          dropout: float = 0.0, e1_expand: bool = False, paper: bool = False,
          head_width: int | None = None) -> Space:
    """The FBNet space; stride-2 layers keep 1×1 maps on tiny inputs.

    ``paper=True``: the paper's nine candidates and a fixed head (``head_width``, default
    the paper's 1984). ``head_width`` also fixes the head of the default space.
    """
    if head_width is not None and (isinstance(head_width, bool)
                                   or not isinstance(head_width, int) or head_width < 1):
        raise SpecError(f"fbnet: head_width must be a positive int, got {head_width!r}",
                        hint=f"the paper's head is {PAPER_HEAD} wide; FBNet-A's released "
                             "head is 1504")
    ops = PAPER_OPS if paper else OPS
    if paper and head_width is None:
        head_width = PAPER_HEAD
    s = SpaceBuilder("fbnet", input_shape)
    x = s.op(ConvBNActOp(out_channels=16, kernel=3, stride=2), s.input)
    for st, (n, width, stride) in enumerate(STAGES):
        for i in range(n):
            x = _layer(s, x, f"s{st}_l{i}", width, stride if i == 0 else 1, e1_expand, ops)
    head = s.value("head_width", (1504, 1984), role="width") if head_width is None else head_width
    x = s.op(ConvBNActOp(out_channels=head, kernel=1), x)
    x = s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x))
    if dropout:
        x = s.op(DropoutOp(p=dropout), x)
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = REFERENCES if head_width is None else _fixed_head_refs(head_width, ops)
    meta: dict[str, Any] = {
        "paper": "FBNet (Wu et al., CVPR 2019)",
        "expansion_1": "1x1 expand conv kept" if e1_expand else "no 1x1 expand conv",
        "references": {"fbnet_a": "paper 4.3M / 249M MACs (released head 1504)",
                       "fbnet_b": "released 4.8M / 295.6M MACs (paper 4.5M / 295M)",
                       "fbnet_c": "paper 5.5M / 375M MACs"}}
    if paper or head_width is not None:  # the default space's text form stays as it was
        meta.update(mode="paper" if paper else "default", candidates=list(ops),
                    head_width=head_width)
    return s.build(x, references=refs, meta=meta)
