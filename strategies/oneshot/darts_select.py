"""DARTS' derivation: architecture probabilities, the argmax / factored top-2 discretisation
and DARTS-PT's perturbation selection (:mod:`~nasir.strategies.oneshot.darts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasir.backends.torch.supernet import Supernet
from nasir.decision_meta import positions
from nasir.space import Space
from nasir.strategies.oneshot.common import derive_from_probs

__all__ = ["arch_probs", "discretize", "input_pair", "perturbation_select", "slot_role"]


def slot_role(space: Space, label: str) -> str | None:
    """``"op"`` / ``"input"`` for an operand's op or input decision of a cell block (its
    metadata has a ``slot``), else ``None``.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("darts")
    >>> slot_role(sp, "normal_b0_op_a"), slot_role(sp, "normal_b0_in_b")
    ('op', 'input')
    """
    m = space.decision(label).meta
    return m.role if m.slot is not None and m.role in ("op", "input") else None


def input_pair(space: Space, label: str) -> str | None:
    """For the input decision of operand ``a`` of a cell block, the input decision of the
    same block's operand ``b`` (else ``None``).

    >>> from nasir.spaces import get_space
    >>> input_pair(get_space("darts"), "reduce_b3_in_a")
    'reduce_b3_in_b'
    """
    m = space.decision(label).meta
    if m.role != "input" or m.slot != "a":
        return None
    for k in positions(space.decisions, role="input", slot="b", cell=m.cell, block=m.block):
        return space.decisions[k].label
    return None


def arch_probs(net: Supernet) -> dict[str, np.ndarray]:
    """Softmax of each decision's logits, and of each per-edge cell node's logits over the
    ops of every edge (``edges × ops``, under the node's key)."""
    out = {lb: F.softmax(net.alphas[lb.replace(".", "__")].detach(), -1).cpu().numpy()
           for lb in net.decisions()}
    for k in net.cell_edges:
        out[k] = F.softmax(net.alphas[k.replace(".", "__")].detach(), -1).cpu().numpy()
    return out


def discretize(net: Supernet, none: str = "exclude") -> dict[str, Any]:
    """Derive a discrete assignment; ``none`` is the policy for ``none`` options of
    :func:`~nasir.strategies.oneshot.common.derive_from_probs` (DARTS: ``exclude``).

    Per-edge cell nodes (``edge_alphas``) take DARTS' rule
    (:meth:`~nasir.backends.torch.supernet.CellEdges.derive`). With factored logits (input
    logits × op logits, ``darts_pt``) each op decision takes its strongest non-``none`` op
    and each node the two strongest *distinct* inputs by the joint softmax mass.
    """
    opts = net.decisions()
    probs = arch_probs(net)
    cells: dict[str, Any] = {}
    for k, c in net.cell_edges.items():
        cells |= c.derive(probs[k])
    out = derive_from_probs(net.space, {lb: probs[lb] for lb in opts},
                            {**net.fixed, **cells}, none=none)
    for lb in opts:
        if slot_role(net.space, lb) == "op" and "none" in opts[lb] and len(opts[lb]) > 1:
            p = probs[lb].copy()
            p[list(opts[lb]).index("none")] = -1.0
            out[lb] = opts[lb][int(np.argmax(p))]
    for lb in opts:
        other = input_pair(net.space, lb)
        if other is None or other not in opts:
            continue
        pa, pb = probs[lb], probs[other]
        joint = np.outer(pa, pb)
        for k in range(min(len(pa), len(pb))):
            joint[k, k] = -1.0  # two distinct inputs
        if joint.max() < 0:
            continue
        i, j = (int(v) for v in np.unravel_index(int(np.argmax(joint)), joint.shape))
        out[lb], out[other] = opts[lb][i], opts[other][j]
    return out


def perturbation_select(net: Supernet, batches: list[tuple[Any, Any]],
                        tune: Any = None, seed: int = 0, none: str = "exclude"
                        ) -> dict[str, Any]:
    """DARTS-PT selection (Wang et al., ICLR 2021): per decision (random order), drop each
    candidate from its mixed op in turn and keep the one whose removal costs the supernet
    the most accuracy on ``batches``; pin it (one-hot) and, with ``tune``, fine-tune the
    weights before the next decision. Input decisions of two-operand cells, and per-edge
    cell nodes, are left to :func:`discretize`. Returns ``{label: option}`` for the
    decisions it selected.

    The architecture logits are left pinned (``-inf`` off the chosen option).
    """
    opts = net.decisions()
    labels = [lb for lb in opts if slot_role(net.space, lb) != "input" and len(opts[lb]) > 1]
    order = np.random.default_rng(seed).permutation(len(labels))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    chosen: dict[str, Any] = {}

    @torch.no_grad()
    def acc() -> float:
        net.train()  # batch statistics: running ones describe the unmasked supernet
        return float((net(x).argmax(1) == y).float().mean())

    for k in order:
        lb = labels[int(k)]
        alpha = net.alphas[lb.replace(".", "__")]
        keep = alpha.detach().clone()
        cands = [i for i, o in enumerate(opts[lb])
                 if none == "keep" or not (isinstance(o, str) and o in ("none", "zero"))]
        scores = {}
        for i in cands:
            with torch.no_grad():
                alpha.copy_(keep)
                alpha[i] = float("-inf")
            scores[i] = acc()
        best = min(scores, key=lambda i: scores[i])
        with torch.no_grad():
            alpha.fill_(float("-inf"))
            alpha[best] = 0.0
        chosen[lb] = opts[lb][best]
        if tune is not None:
            tune()
    return chosen
