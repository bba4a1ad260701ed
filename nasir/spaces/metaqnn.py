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

Decisions from the paper not kept by default (``paper=True`` keeps them): MetaQNN allows
FC only once the representation is below 8×8, limits conv kernels and pools by the
representation size and FC widths to non-increasing, and ends in either termination;
pools pad by k//2 here (Caffe's do not, rounding up instead), so every assignment is
valid at any input size (down to 1×1).

``metaqnn_cifar10`` is the paper's best CIFAR-10 model (Table A2: [C(512,5,1),
C(256,3,1), C(256,5,1), C(256,3,1), P(5,3), C(512,3,1), C(512,5,1), P(2,2), SM(10)],
6.92 % error, 11.26M params); :data:`REFERENCE_OPTIONS` builds it with
``classifier="flatten"``, where it has 11,368,458 params (+1.0 %: with the k//2 padding
its last map is 6×6, Caffe's is 5×5; the convs here are conv-BN-ReLU).

``paper=True`` is the paper's state space with its layer restrictions (Sec. 4 and Table 1;
the released ``libs/grammar/state_enumerator.py`` and ``models/*/state_space_parameters.py``
of ``bowenbaker/metaqnn``). The representation size ``n`` has the bins ``n >= 8``,
``4 <= n < 8``, ``n < 4`` (:func:`rep_bin`); a conv kernel and a pool window must be
smaller than the bin's value (``f < 8``: 1/3/5 and every pool; ``f < 4``: 1/3 and the
(3,2), (2,2) pools; ``n < 4``: no conv, no pool); pools are Caffe's (no padding, rounding
up), so the sizes are the paper's; FC layers only from a representation below 8×8, at most
``fc_layers`` (2) of them with non-increasing widths; at most ``layer_limit`` (12) conv,
pool and FC layers; after any conv or pool the walk may go on or terminate with global
average pooling (``gap``, no FC after it) or the softmax (``sm``, on the flattened map or
after the FC layers). The termination is a decision, not the ``classifier`` option.
Because the allowed choices depend on the representation size, the body branches on
every pool choice (a tree of conv units) and the decisions are keyed by the bin:
``u{i}_kernel`` / ``u{i}_pool`` / ``u{i}_next`` at ``n >= 8``, ``u{i}_r4_*`` at
``4 <= n < 8``, ``u{i}_r1_next`` below, ``_end`` once the layer limit is reached;
``u{i}_next`` picks ``conv`` (the next unit), ``fc``, ``gap`` or ``sm`` where allowed, and
``fc_layers`` (``fc_layers_upto1`` with room for one FC layer) the FC widths, e.g.
``(512, 256)``. Decisions are ordered so that each comes after those that make it active.
Kept from nasir's default: a walk starts with a conv (the paper may end at once) and has
at most ``units`` (6) convs, where the 12-layer limit allows up to 12 (``units=12``
builds that: at 32×32, 43k body nodes instead of 10k). The reference keeps its Table A2
layers; with Caffe's pools its last map is 5×5 and it has 11,312,138 params (+0.46 % over
the paper's 11.26M).

>>> sp = build(paper=True)
>>> sp.decision("u3_r4_kernel").options, sp.decision("u2_r4_next").options
((1, 3), ('conv', 'fc', 'gap', 'sm'))

>>> sp = build(input_shape=(1, 8, 8), num_classes=10)
>>> len(sp.decisions), sorted(sp.references)
(27, ['metaqnn_cifar10'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nasir.dsl import SpaceBuilder
from nasir.errors import AssignmentError, SpecError
from nasir.graph import Node
from nasir.ops import (
    ConvBNActOp,
    FCStackOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IdentityOp,
    LinearOp,
    MaxPool2dOp,
    ReLUOp,
)
from nasir.space import Decision, Space

__all__ = ["POOLS", "REFERENCES", "REFERENCE_OPTIONS", "build", "caffe_pool_size", "rep_bin"]

#: pooling choices: name -> (kernel, stride)
POOLS = {"p5s3": (5, 3), "p3s2": (3, 2), "p2s2": (2, 2)}
#: the paper's conv and FC domains (Table 1)
FILTERS = (64, 128, 256, 512)
KERNELS = (1, 3, 5)
FC_UNITS = (512, 256, 128)
#: what pool decisions tell a strategy (``DecisionMeta.windows``): option, kernel, stride
_WINDOWS = tuple((name, k, st) for name, (k, st) in POOLS.items())

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
        conv = ConvBNActOp(out_channels=s.value(f"u{i}_filters", (64, 128, 256, 512),
                                                role="width", layer=i),
                           kernel=s.value(f"u{i}_kernel", (1, 3, 5), role="kernel", layer=i))
        x = s.op(conv, x)
        branches = {"none": lambda b, h: b.op(IdentityOp(), h)}
        branches.update({name: _pool(k, st) for name, (k, st) in POOLS.items()})
        x = s.choose(f"u{i}_pool", branches, x, role="pool", layer=i, windows=_WINDOWS)
        if i + 1 < units:
            x = s.repeat(f"u{i + 1}_more", (0, 1), _unit(i + 1, units), x, layer=i + 1)
        return x

    return make


def _fc(j: int, fcs: int):
    def make(s: SpaceBuilder, x: Node) -> Node:
        x = s.op(ReLUOp(), s.op(LinearOp(out_features=s.value(
            f"fc{j}_units", (512, 256, 128), role="units", block=j)), x))
        if j + 1 < fcs:
            x = s.repeat(f"fc{j + 1}_more", (0, 1), _fc(j + 1, fcs), x, block=j + 1)
        return x

    return make


# -- the paper's state space (paper=True) ----------------------------------------------------

def rep_bin(n: int) -> int:
    """The representation-size bin of an ``n×n`` map: 8 (``n >= 8``), 4 (``4 <= n < 8``)
    or 1 (``n < 4``), as the official ``image_size_bucket``; conv kernels and pool windows
    must be smaller than it.

    >>> [rep_bin(n) for n in (32, 8, 7, 4, 3)]
    [8, 8, 4, 4, 1]
    """
    return 8 if n >= 8 else 4 if n >= 4 else 1


def caffe_pool_size(n: int, kernel: int, stride: int) -> int:
    """Output size of Caffe's unpadded max pool, which rounds up: ``ceil((n-k)/s) + 1``.

    >>> caffe_pool_size(32, 5, 3), caffe_pool_size(10, 2, 2)
    (10, 5)
    """
    return -(-(n - kernel) // stride) + 1


def _caffe_pool(k: int, st: int):
    return lambda b, x: b.op(MaxPool2dOp(kernel=k, stride=st, padding=0, ceil_mode=True), x)


class _PaperWalk:
    """Region functions of the paper's walk: a conv unit at representation size ``n`` after
    ``depth`` conv/pool layers, then the next layer or a termination."""

    def __init__(self, units: int, fc_layers: int, limit: int) -> None:
        self.units, self.fc_layers, self.limit = units, fc_layers, limit

    def unit(self, i: int, n: int, depth: int):
        def make(b: SpaceBuilder, x: Node) -> Node:
            r = rep_bin(n)
            tag = "" if r == 8 else f"_r{r}"
            kernels = tuple(k for k in KERNELS if k < r)
            x = b.op(ConvBNActOp(out_channels=b.value(f"u{i}_filters", FILTERS, role="width",
                                                      layer=i),
                                 kernel=b.value(f"u{i}{tag}_kernel", kernels, role="kernel",
                                                layer=i)), x)
            pools = [p for p, (k, _) in POOLS.items() if k < r] if depth + 1 < self.limit else []
            if not pools:
                return self.after(i, n, depth + 1)(b, x)
            branches = {"none": self.after(i, n, depth + 1)}
            for p in pools:
                branches[p] = self._pooled(i, n, depth + 1, *POOLS[p])
            return b.choose(f"u{i}{tag}_pool", branches, x, role="pool", layer=i,
                            windows=tuple(w for w in _WINDOWS if w[0] in branches))

        return make

    def _pooled(self, i: int, n: int, depth: int, k: int, st: int):
        after = self.after(i, caffe_pool_size(n, k, st), depth + 1)
        return lambda b, x: after(b, _caffe_pool(k, st)(b, x))

    def after(self, i: int, n: int, depth: int):
        def make(b: SpaceBuilder, x: Node) -> Node:
            r = rep_bin(n)
            opts = {}
            if i + 1 < self.units and depth < self.limit and r > 1:
                opts["conv"] = self.unit(i + 1, n, depth)
            room = min(self.fc_layers, self.limit - depth)
            if room > 0 and r < 8:
                opts["fc"] = self.fc(room)
            opts["gap"] = self.gap
            opts["sm"] = self.softmax
            tag = ("" if r == 8 else f"_r{r}") + ("_end" if depth >= self.limit else "")
            return b.choose(f"u{i}{tag}_next", opts, x, role="next", layer=i)

        return make

    def fc(self, room: int):
        """1..``room`` FC layers (ReLU) on the flattened map, each no wider than the one
        before: one decision over those width sequences."""
        label = "fc_layers" if room == self.fc_layers else f"fc_layers_upto{room}"
        seqs = tuple(_fc_widths(room))
        return lambda b, x: b.op(FCStackOp(widths=b.value(label, seqs, role="units")),
                                 b.op(FlattenOp(), x))

    @staticmethod
    def gap(b: SpaceBuilder, x: Node) -> Node:
        return b.op(GlobalAvgPoolOp(), x)

    @staticmethod
    def softmax(b: SpaceBuilder, x: Node) -> Node:
        return x  # the classifier after the walk reads the flattened map


def _fc_widths(room: int) -> list[tuple[int, ...]]:
    """Widths of 1..``room`` FC layers, each no wider than the one before (paper Sec. 4)."""
    out: list[tuple[int, ...]] = [(d,) for d in FC_UNITS]
    last = out
    for _ in range(room - 1):
        last = [(*seq, d) for seq in last for d in FC_UNITS if d <= seq[-1]]
        out += last
    return out


def _causal_order(d: Decision) -> tuple:
    """Unit decisions by unit, then filters, kernel, pool, next; the FC layers last (so that
    every decision comes after those that make it active)."""
    if d.label.startswith("fc"):
        return (1 << 30, 0)
    unit, _, role = d.label[1:].partition("_")
    rank = next(k for k, r in enumerate(("filters", "kernel", "pool", "next")) if r in role)
    return (int(unit), rank)


def _paper_ref(convs: Sequence[tuple[int, int, str]], input_size: int, last: str) -> dict:
    """Assignment values of a chain of conv units ``(filters, kernel, pool)`` ending in
    termination ``last`` in the paper's space (labels follow the representation size)."""
    out: dict = {}
    n = input_size
    for i, (f, k, pool) in enumerate(convs):
        tag = "" if rep_bin(n) == 8 else f"_r{rep_bin(n)}"
        out.update({f"u{i}_filters": f, f"u{i}{tag}_kernel": k, f"u{i}{tag}_pool": pool})
        if pool != "none":
            n = caffe_pool_size(n, *POOLS[pool])
        r = rep_bin(n)
        out[f"u{i}{'' if r == 8 else f'_r{r}'}_next"] = "conv" if i + 1 < len(convs) else last
    return out


def _holds(sp: Space, ref: Mapping[str, Any]) -> bool:
    """Whether ``ref`` is an architecture of ``sp`` (its layers obey the space's rules)."""
    try:
        return sp.active(sp.check(ref)) == set(ref)
    except AssignmentError:
        return False


def _build_paper(input_shape: Sequence[int], num_classes: int, units: int, fc_layers: int,
                 layer_limit: int) -> Space:
    for key, v, least in (("units", units, 1), ("fc_layers", fc_layers, 0),
                          ("layer_limit", layer_limit, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise SpecError(f"metaqnn: {key} must be an int >= {least}, got {v!r}")
    size = min(int(v) for v in tuple(input_shape)[1:])
    if size < 4:
        raise SpecError(f"metaqnn paper mode: a {size}×{size} input allows no conv layer",
                        hint="the paper's rules need inputs of at least 4×4 (conv kernels "
                             "smaller than the representation-size bin)")
    s = SpaceBuilder("metaqnn", input_shape)
    x = _PaperWalk(units, fc_layers, layer_limit).unit(0, size, 0)(s, s.input)
    # the softmax layer of every ending (on the flattened map, pooled map or FC output)
    out = s.op(LinearOp(out_features=num_classes), s.op(FlattenOp(), x))
    ref = _paper_ref([(512, 5, "none"), (256, 3, "none"), (256, 5, "none"), (256, 3, "p5s3"),
                      (512, 3, "none"), (512, 5, "p2s2")], size, "sm")
    sp = s.build(out)
    refs = {"metaqnn_cifar10": ref} if _holds(sp, ref) else {}
    sp = Space(sp.name, sp.body, tuple(sorted(sp.decisions, key=_causal_order)), refs,
               sp.constraints, {
                   "paper": "MetaQNN (Baker et al., ICLR 2017)", "mode": "paper",
                   "limits": {"conv_units": units, "fc_layers": fc_layers,
                              "layers": layer_limit},
                   "references": {"metaqnn_cifar10": "paper Table A2: 11.26M params, 6.92% "
                                                     "error"}})
    sp.validate()
    return sp


def build(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, units: int = 6,
          fc_layers: int = 2, classifier: str = "gap", paper: bool = False,
          layer_limit: int = 12) -> Space:
    """The MetaQNN space (CIFAR-10 limits by default). ``paper=True``: the paper's state
    space and restrictions (see the module docstring; ``classifier`` is then a decision and
    ``layer_limit`` caps conv + pool + FC layers)."""
    if paper:
        return _build_paper(input_shape, num_classes, units, fc_layers, layer_limit)
    if classifier not in ("gap", "flatten"):
        raise SpecError(f"metaqnn: classifier must be 'gap' or 'flatten', got {classifier!r}",
                        hint="'flatten' is MetaQNN's softmax termination on the feature map")
    s = SpaceBuilder("metaqnn", input_shape)
    x = _unit(0, units)(s, s.input)
    if classifier == "gap":
        x = s.op(GlobalAvgPoolOp(), x)
    x = s.op(FlattenOp(), x)
    x = s.repeat("fc0_more", (0, 1), _fc(0, fc_layers), x, block=0)
    x = s.op(LinearOp(out_features=num_classes), x)
    refs = REFERENCES if units >= 6 and fc_layers >= 1 else {}
    return s.build(x, references=refs, meta={
        "paper": "MetaQNN (Baker et al., ICLR 2017)", "classifier": classifier,
        "limits": {"conv_pool_layers": 2 * units, "fc_layers": fc_layers},
        "references": {"metaqnn_cifar10": "paper Table A2: 11.26M params, 6.92% error "
                                          "(classifier='flatten')"}})
