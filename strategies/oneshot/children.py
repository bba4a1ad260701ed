"""The next most probable distinct children of a one-shot search's final architecture weights.

A derived child is the method's own derivation of its final probabilities. Asked for more
(``top_k``), the one-shot strategies rank every other assignment by its joint probability
``Π_d p_d(option)`` over the decisions that have probabilities (the others keep the derived
child's value) and take the most probable ones, best first, whose canonical hash is new
(two isomorphic cells are one architecture) and that the method's derivation could give
(``none`` policy: ``exclude`` takes no ``none`` op where another exists, ``connect`` no
disconnected network). The ranking is the exact k-best of a product of independent factors:
a best-first walk over per-decision ranks.

>>> import numpy as np
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> p = {d.label: np.array([0.05, 0.1, 0.5, 0.3, 0.05]) for d in sp.decisions}
>>> p["edge_0_1"] = np.array([0.05, 0.1, 0.45, 0.35, 0.05])
>>> first = {d.label: "nor_conv_1x1" for d in sp.decisions}
>>> kids = ranked_children(sp, p, first, 3, none="exclude")
>>> [[k for k in c if c[k] != "nor_conv_1x1"] for c in kids]
[[], ['edge_0_1'], ['edge_0_2']]
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import numpy as np

from nasir.space import Assignment, Space

__all__ = ["ranked_children"]

#: most candidate assignments looked at for the top-k (a bound on the walk)
MAX_CANDIDATES = 5000


def _acceptable(space: Space, a: Mapping[str, Any], none: str) -> bool:
    from nasir.strategies.oneshot.common import ZERO_OPTIONS, is_connected

    if none == "exclude":
        for d in space.decisions:
            v = a.get(d.label)
            if isinstance(v, str) and v in ZERO_OPTIONS and any(
                    not (isinstance(o, str) and o in ZERO_OPTIONS) for o in d.options):
                return False
    try:
        return none != "connect" or is_connected(space, a)
    except Exception:  # an assignment that does not build is no child
        return False


def _node_alternatives(node: Mapping[str, Any], weights: Any) -> list[tuple[float, dict]]:
    """A DARTS cell node's choices (two distinct incoming edges, each with a non-``none``
    op; DARTS' rule, :meth:`~nasir.backends.torch.supernet.CellEdges.derive`) with their
    log probabilities, best first."""
    from nasir.strategies.oneshot.common import ZERO_OPTIONS

    rows = np.log(np.asarray(weights, dtype=np.float64) + 1e-12)
    ops, inputs = list(node["ops"]), list(node["inputs"])
    live = [k for k, o in enumerate(ops) if not (isinstance(o, str) and o in ZERO_OPTIONS)]
    live = live or list(range(len(ops)))
    pairs = ([(a, b) for a in range(len(inputs)) for b in range(len(inputs)) if a != b]
             if len(inputs) > 1 else [(0, 0)])
    (ia, ib), (oa, ob) = node["in_labels"], node["op_labels"]
    out = [(float(rows[a][ka] + rows[b][kb]),
            {ia: inputs[a], oa: ops[ka], ib: inputs[b], ob: ops[kb]})
           for a, b in pairs for ka in live for kb in live]
    return sorted(out, key=lambda t: -t[0])


def _factors(space: Space, probs: Mapping[str, Any], cells: Mapping[str, Any]
             ) -> list[list[tuple[float, dict]]]:
    """Independent factors of the joint probability: per decision its options, per cell
    node its edge pairs; each a list of ``(log p, values)`` best first."""
    out = []
    for d in space.decisions:
        p = probs.get(d.label)
        if p is not None and np.ndim(p) == 1 and len(p) == d.size:
            lp = np.log(np.asarray(p, dtype=np.float64) + 1e-12)
            order = np.argsort(-lp, kind="stable")
            out.append([(float(lp[i]), {d.label: d.options[int(i)]}) for i in order])
    for key, node in cells.items():
        if key in probs:
            out.append(_node_alternatives(node, probs[key]))
    return out


def ranked_children(space: Space, probs: Mapping[str, Any], first: Mapping[str, Any],
                    k: int, none: str = "keep", cells: Mapping[str, Any] | None = None
                    ) -> list[Assignment]:
    """``first`` (the method's derived child), then up to ``k - 1`` more distinct children
    in decreasing joint probability (module docstring); fewer when the space (or
    :data:`MAX_CANDIDATES`) runs out. ``cells``: DARTS cell nodes with per-edge
    probabilities (key → ``in_labels``, ``op_labels``, ``inputs``, ``ops``)."""
    from nasir.passes.hashing import assignment_hash

    base = space.check(dict(first))
    out, seen = [base], {assignment_hash(space, base)}
    factors = _factors(space, probs, cells or {})
    if k <= 1 or not factors:
        return out[:max(1, k)]

    def score(ranks: tuple[int, ...]) -> float:
        return -sum(f[r][0] for f, r in zip(factors, ranks))

    start = (0,) * len(factors)
    # ties go to changes of earlier factors first (the negated ranks order them)
    heap = [(score(start), start, start)]
    visited, looked = {start}, 0
    while heap and len(out) < k and looked < MAX_CANDIDATES:
        _, _, ranks = heapq.heappop(heap)
        looked += 1
        for i, f in enumerate(factors):
            if ranks[i] + 1 < len(f):
                nxt = (*ranks[:i], ranks[i] + 1, *ranks[i + 1:])
                if nxt not in visited:
                    visited.add(nxt)
                    heapq.heappush(heap, (score(nxt), tuple(-r for r in nxt), nxt))
        cand = dict(base)
        for f, r in zip(factors, ranks):
            cand |= f[r][1]
        try:
            a = space.check(cand)
        except Exception:  # an option combination the space rules out
            continue
        h = assignment_hash(space, a)
        if h in seen or not _acceptable(space, a, none):
            continue
        seen.add(h)
        out.append(a)
    return out
