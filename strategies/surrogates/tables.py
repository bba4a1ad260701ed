"""Lookup tables over option indices: MACs and LUT latency of candidates without graphs.

A :class:`TermTable` predicts a metric as a constant plus a sum of *terms*; each term reads
one entry of its own sub-table, addressed by the option indices of a few decisions:

    value(idx) = constant + Σ_t values[base[t] + Σ_k idx[pos[t, k]] · stride[t, k]]

A decision × option latency table (additive spaces such as NB201) is the special case of
one decision per term (:meth:`TermTable.dense`). MnasNet's MACs are not additive — block
``i``'s channels depend on block ``i−1``'s filters — so :func:`mnasnet_terms` keys each
block's term by (previous block's filters, the block's op, kernel, SE, skip, filters,
layers) and adds the head keyed by the last block's filters: exact, and checked against
:func:`nasir.passes.analyze` in the tests.

>>> import numpy as np
>>> t = TermTable.dense(np.array([[1.0, 2.0], [10.0, 20.0]]), constant=0.5)
>>> t.evaluate(np.array([[0, 1], [1, 0]]))
array([21.5, 12.5])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from nasir.decision_meta import positions
from nasir.errors import BackendError, SpecError
from nasir.graph import Graph
from nasir.ops import InputOp, Op
from nasir.space import Space
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.passes.layer_chain import LayerChain

__all__ = ["TermTable", "additive_terms", "block_chain", "layer_latency_from_lut", "lut_terms",
           "metric_terms", "mnasnet_terms", "proxy_latency_ms"]


@dataclass(frozen=True)
class TermTable:
    """A metric as ``constant`` plus one looked-up value per term (see module doc).

    ``pos`` and ``stride`` are ``(terms, max keys)`` int64 arrays, padded with position 0
    and stride 0 (a padded key adds nothing), ``base`` is ``(terms,)``, ``values`` float64.
    """

    pos: np.ndarray
    stride: np.ndarray
    base: np.ndarray
    values: np.ndarray
    constant: float = 0.0

    @staticmethod
    def empty() -> TermTable:
        """No terms: every candidate gets 0."""
        return TermTable(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64),
                         np.zeros(0, np.int64), np.zeros(1, np.float64), 0.0)

    @staticmethod
    def dense(table: np.ndarray, constant: float = 0.0) -> TermTable:
        """From a ``decisions × max options`` table (one term per decision)."""
        t = np.asarray(table, dtype=np.float64)
        if t.ndim != 2:
            raise SpecError(f"a dense latency table is decisions × options, got shape {t.shape}")
        d, w = t.shape
        return TermTable(np.arange(d, dtype=np.int64)[:, None], np.ones((d, 1), np.int64),
                         np.arange(d, dtype=np.int64) * w, t.ravel().copy(), float(constant))

    @staticmethod
    def from_terms(terms: Sequence[tuple[Sequence[int], np.ndarray]],
                   constant: float = 0.0) -> TermTable:
        """From ``(decision positions, sub-table)`` pairs; the sub-table has one axis per
        position, sized by that decision's options, in the order of the positions."""
        if not terms:
            return TermTable.empty()
        width = max(len(p) for p, _ in terms)
        pos = np.zeros((len(terms), width), np.int64)
        stride = np.zeros((len(terms), width), np.int64)
        base = np.zeros(len(terms), np.int64)
        chunks, at = [], 0
        for t, (p, sub) in enumerate(terms):
            sub = np.asarray(sub, dtype=np.float64)
            if sub.ndim != len(p):
                raise SpecError(f"term {t} has {len(p)} key decisions but a "
                                f"{sub.ndim}-d table")
            pos[t, :len(p)] = p
            contiguous = np.ascontiguousarray(sub)
            stride[t, :len(p)] = [s // 8 for s in contiguous.strides]
            base[t] = at
            chunks.append(contiguous.ravel())
            at += contiguous.size
        return TermTable(pos, stride, base, np.concatenate(chunks), float(constant))

    def same_layout(self, other: TermTable) -> bool:
        """Whether ``other`` reads the same entries (its values may differ)."""
        return (self.pos.shape == other.pos.shape and self.base.shape == other.base.shape
                and len(self.values) == len(other.values)
                and bool((self.pos == other.pos).all() and (self.stride == other.stride).all()
                         and (self.base == other.base).all()))

    def evaluate(self, idx: np.ndarray) -> np.ndarray:
        """Vectorised numpy evaluation for rows of option indices (float64)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.full(len(idx), self.constant, dtype=np.float64)
        for t in range(len(self.base)):
            at = self.base[t] + idx[:, self.pos[t]] @ self.stride[t]
            out += self.values[at]
        return out


# -- MnasNet ---------------------------------------------------------------------------------

#: the roles of a block's decisions, in the order of a block term's keys
_ROLES = ("width", "op", "kernel", "se", "skip", "depth")

LayerCost = Callable[[Op, TensorType, TensorType], float]


@lru_cache(maxsize=65536)
def _layer(op: Op, t_in: TensorType) -> tuple[TensorType, int]:
    out = op.infer((t_in,))
    return out, int(op.macs((t_in,), out))


def _macs_cost(op: Op, t_in: TensorType, t_out: TensorType) -> float:
    return float(_layer(op, t_in)[1])


def block_chain(space: Space) -> tuple[LayerChain, list[list[int]]] | None:
    """The space's layer chain (:func:`nasir.passes.layer_chain.layer_chain`) and, per
    block, the schema positions of its decisions by role (width, op, kernel, SE, skip,
    depth: the metadata the DSL gave them), or ``None`` when the space is not such a chain
    of MnasNet blocks.

    >>> from nasir.spaces import get_space
    >>> chain, keys = block_chain(get_space("mnasnet"))
    >>> len(keys), [get_space("mnasnet").decisions[k].label for k in keys[0]]
    (7, ['b1_filters', 'b1_op', 'b1_kernel', 'b1_se', 'b1_skip', 'b1_layers'])
    >>> block_chain(get_space("nb201")) is None
    True
    """
    from nasir.passes.layer_chain import layer_chain

    try:
        chain = layer_chain(space)
    except SpecError:
        return None
    decs = space.decisions
    keys = []
    for label in chain.blocks:
        b = space.decision(label).meta.block
        at = positions(decs, block=b) if b is not None else []
        by_role = {decs[k].meta.role: k for k in at}
        if len(at) != len(_ROLES) or set(by_role) != set(_ROLES):
            return None
        keys.append([by_role[r] for r in _ROLES])
    return chain, keys


def mnasnet_terms(space: Space, layer_cost: LayerCost | None = None) -> TermTable:
    """Exact per-candidate metric table for a MnasNet space (default metric: MACs).

    ``layer_cost(op, input type, output type)`` gives one top-level layer's cost (default:
    its MACs; :func:`layer_latency_from_lut` gives LUT latency). The stem's cost is the
    constant; block ``b``'s term is keyed by the previous block's filters (the stem's width
    for the first block) and its own six decisions; the head's by the last block's
    filters. The space is read through :func:`block_chain` (its layer chain and the
    decisions' roles), so any space built like MnasNet works (``tiny_mnasnet`` too).
    """
    cost = layer_cost or _macs_cost
    found = block_chain(space)
    if found is None:
        raise SpecError(f"mnasnet_terms needs a MnasNet-style space, got {space.name}",
                        hint="build it with get_space('mnasnet', ...): a chain of blocks "
                             "whose decisions have the roles " + ", ".join(_ROLES))
    chain, block_keys = found
    decs = space.decisions
    shape = space.input_shape
    if shape is None:
        raise SpecError(f"space {space.name} has no input")
    t = TensorType(shape)
    constant = 0.0
    for op in chain.stem:
        t_out = _layer(op, t)[0]
        constant += cost(op, t, t_out)
        t = t_out
    terms: list[tuple[Sequence[int], np.ndarray]] = []
    hw = t.shape[1:]
    prev_filters: tuple[int, ...] = (t.shape[0],)
    prev_key: int | None = None
    for i, keys in enumerate(block_keys):
        labels = [decs[k].label for k in keys]
        opts = [decs[k].options for k in keys]
        sub = np.zeros((len(prev_filters), *(len(o) for o in opts)))
        out_hw = hw
        for cell in np.ndindex(*sub.shape):
            values = {lb: o[j] for lb, o, j in zip(labels, opts, cell[1:])}
            nl = values[labels[-1]]
            t_in = TensorType((prev_filters[cell[0]], *hw))
            first = chain.layer_op(i, values, first=True)
            t_out = _layer(first, t_in)[0]
            total = cost(first, t_in, t_out)
            if nl > 1:
                rest = chain.layer_op(i, values, first=False)
                total += (nl - 1) * cost(rest, t_out, _layer(rest, t_out)[0])
            sub[cell] = total
            out_hw = t_out.shape[1:]
        if prev_key is not None:
            term_keys = [prev_key, *keys]
        else:
            term_keys, sub = list(keys), sub[0]
        terms.append((term_keys, sub))
        hw, prev_filters, prev_key = out_hw, decs[keys[0]].options, keys[0]
    tail = np.zeros(len(prev_filters))
    for i, cin in enumerate(prev_filters):
        t = TensorType((cin, *hw))
        for op in chain.head:
            t_out = _layer(op, t)[0]
            tail[i] += cost(op, t, t_out)
            t = t_out
    terms.append(([block_keys[-1][0]], tail))
    return TermTable.from_terms(terms, constant)


# -- latency ---------------------------------------------------------------------------------

@lru_cache(maxsize=65536)
def _layer_key(op: Op, t_in: TensorType) -> str:
    """The LUT's key of a layer: ``nasir.backends.tvm.lut.layer_key`` of a node applying
    ``op`` to an input of type ``t_in``."""
    from nasir.backends.tvm.lut import layer_key

    g = Graph("layer")
    x = g.add(InputOp(shape=t_in.shape, dtype=t_in.dtype), type_=t_in)
    return layer_key(g.add(op, [x]))


def layer_latency_from_lut(lut: Any, missing: str = "raise") -> LayerCost:
    """A ``layer_cost`` for :func:`mnasnet_terms` reading a
    :class:`nasir.backends.tvm.lut.LatencyLUT` (key: op signature | input type).

    Every layer must already be in the table (fill it with ``build_lut``); a missing one
    is a ``BackendError`` naming it, or with ``missing="nan"`` makes the entries that need
    it NaN (a partly measured table). The LUT's calibrated constant is not included: add
    ``lut.constant_ms`` to the table's constant.
    """
    from nasir.backends.tvm.lut import FREE_OPS

    if missing not in ("raise", "nan"):
        raise SpecError(f"missing must be 'raise' or 'nan', got {missing!r}")
    keys, values = lut.arrays()
    lat: Mapping[str, float] = dict(zip(keys, values.tolist()))

    def cost(op: Op, t_in: TensorType, t_out: TensorType) -> float:
        if op.name in FREE_OPS:
            return 0.0
        key = _layer_key(op, t_in)
        if key not in lat:
            if missing == "nan":
                return float("nan")
            raise BackendError(f"layer {key!r} is not in the latency table",
                               hint="measure the space's layers first (build_lut with "
                                    "assignments covering every block option)")
        return float(lat[key])

    return cost


def proxy_latency_ms(gmacs_per_ms: float = 0.02, gbytes_per_ms: float = 0.01,
                     overhead_ms: float = 0.005) -> LayerCost:
    """A roofline stand-in for a measured LUT: per layer ``overhead + max(compute, memory)``
    from its MACs and its input/output bytes. Used where no measured table covers a space
    (the scoring benchmark); it has a LUT's shape, not a device's numbers."""

    def cost(op: Op, t_in: TensorType, t_out: TensorType) -> float:
        macs = _layer(op, t_in)[1]
        moved = 4 * (math.prod(t_in.shape) + math.prod(t_out.shape))
        return overhead_ms + max(macs / (gmacs_per_ms * 1e9), moved / (gbytes_per_ms * 1e9))

    return cost


# -- generic ---------------------------------------------------------------------------------

def additive_terms(space: Space, metric: Callable[[Space, Any], float], *, checks: int = 4,
                   seed: int = 0) -> TermTable | None:
    """A dense decision × option table for ``metric`` if it is additive over the decisions
    (checked exactly on ``checks`` random assignments), else ``None``.

    Entry ``[d, o]`` is the change from the all-first-options assignment when decision
    ``d`` takes option ``o``; the constant is the metric of that base assignment.
    """
    from nasir.passes.sampling import UniformSampler

    base_idx = np.zeros(len(space.decisions), dtype=np.int64)
    base = metric(space, space.from_indices(base_idx))
    width = max(d.size for d in space.decisions)
    table = np.zeros((len(space.decisions), width))
    for d, dec in enumerate(space.decisions):
        for o in range(1, dec.size):
            idx = base_idx.copy()
            idx[d] = o
            table[d, o] = metric(space, space.from_indices(idx)) - base
    terms = TermTable.dense(table, base)
    rows = UniformSampler(space).sample_indices(np.random.default_rng(seed), checks)
    for row in rows:
        want = metric(space, space.from_indices(row))
        if not np.isclose(terms.evaluate(row[None])[0], want, rtol=1e-12, atol=1e-9):
            return None
    return terms


def _analysis(key: str) -> Callable[[Space, Any], float]:
    def fn(space: Space, a: Any) -> float:
        from nasir.passes.analysis import analyze

        return float(analyze(space.instantiate(a))[key])

    return fn


def metric_terms(space: Space, metric: str) -> TermTable:
    """The exact lookup table of ``macs`` or ``params`` for ``space`` (cached on it):
    per-block for MnasNet, a dense table where the metric is additive (NB201)."""
    cache = space.__dict__.setdefault("_metric_terms", {})
    if metric in cache:
        return cache[metric]
    if metric not in ("macs", "params"):
        raise SpecError(f"no lookup table for metric {metric!r}",
                        hint="tables exist for macs and params; pass latency= as a TermTable "
                             "(see lut_terms)")
    if metric == "macs" and block_chain(space) is not None:
        table: TermTable | None = mnasnet_terms(space)
    else:
        table = additive_terms(space, _analysis(metric))
    if table is None:
        raise SpecError(f"{metric} of {space.name} is not additive over its decisions, and "
                        "no exact table is known for this space",
                        hint="drop the bound, or give a TermTable for it")
    cache[metric] = table
    return table


def lut_terms(space: Space, lut: Any, missing: str = "raise") -> TermTable:
    """Adapter from a :class:`nasir.backends.tvm.lut.LatencyLUT` to a latency table:
    per-block for MnasNet (every layer must be in the LUT), the LUT's dense table where
    the space is additive (NB201); the LUT's calibrated constant is included.
    ``missing`` as in :func:`layer_latency_from_lut`."""
    if block_chain(space) is not None:
        t = mnasnet_terms(space, layer_latency_from_lut(lut, missing))
        return TermTable(t.pos, t.stride, t.base, t.values, t.constant + lut.constant_ms)
    dense = lut.dense(space)
    if dense is None:
        raise SpecError(f"the latency of {space.name} is not additive over its decisions",
                        hint="build a per-block table like mnasnet_terms for this space")
    return TermTable.dense(dense, lut.constant_ms)
