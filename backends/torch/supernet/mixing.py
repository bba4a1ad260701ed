"""How a supernet mixes the candidates of a decision: the per-forward context.

:class:`_Ctx` holds, for one forward, the mixing weights (``darts``: softmax; ``gumbel``:
Gumbel-softmax) or the chosen indices (``single``, ``binarized``, ``gumbel_hard``) of every
decision and cell node, and combines candidate outputs accordingly (the gates of the
one-path modes, the two-path estimator). See :mod:`nasir.backends.torch.supernet`.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from nasir.errors import AssignmentError

if TYPE_CHECKING:
    from nasir.backends.torch.supernet.net import Supernet


MODES = ("darts", "gumbel", "gumbel_hard", "binarized", "single")

#: modes that run one path per forward (the others mix every candidate)
ONE_PATH = ("single", "binarized", "gumbel_hard")

class _Gate(torch.autograd.Function):
    """Forward: the output unchanged. Backward: d/dg of ``g · out`` at g = 1."""

    @staticmethod
    def forward(ctx: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        out, _gate = args  # (out, gate): the gate only receives a gradient
        ctx.save_for_backward(out)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple[torch.Tensor, torch.Tensor]:
        (grad,) = grads
        (out,) = ctx.saved_tensors
        return grad, (grad * out).sum().reshape(())


class _WeakMemo:
    """Outputs of pure ops by key, with their operands, held by weak references: an entry
    serves only while its output and operands are alive anyway (saved for backward, or
    still to be used), so sharing never keeps a tensor past its last use. Strong references
    kept every memoised operand and output until the forward ended: +24 % peak memory in a
    DARTS weight step with frozen logits (NB201 C=16, batch 32: 112.3 -> 138.8 MiB), which
    the memory model (sharing with normal lifetimes) did not predict."""

    def __init__(self) -> None:
        self._refs: dict[tuple, tuple[tuple[weakref.ref, ...], weakref.ref]] = {}

    def get(self, key: tuple) -> tuple[tuple[Any, ...], Any] | None:
        """``(operands, output)`` stored under ``key`` while all of them are alive."""
        hit = self._refs.get(key)
        if hit is None:
            return None
        ins, out = tuple(r() for r in hit[0]), hit[1]()
        # a dead operand's id may now name another tensor: no hit
        if out is None or any(t is None for t in ins):
            return None
        return ins, out

    def __setitem__(self, key: tuple, value: tuple[tuple[Any, ...], Any]) -> None:
        ins, out = value
        with contextlib.suppress(TypeError):  # not tensors (no weak references): not shared
            self._refs[key] = (tuple(weakref.ref(t) for t in ins), weakref.ref(out))


class _Ctx:
    """Per-forward state: mixing weights (darts/gumbel) or chosen indices."""

    def __init__(self, net: Supernet) -> None:
        self.net = net
        self.mode = net.mode
        self.weights: dict[str, torch.Tensor] = {}
        self.index: dict[str, int] = {}
        self.probs: dict[str, torch.Tensor] = {}
        #: binarized, two-path estimator: label → (option a, option b, softmax over a, b)
        self.pairs: dict[str, tuple[int, int, torch.Tensor]] = {}
        #: mixed modes: outputs of pure (weightless, deterministic) ops, by op signature
        #: and operands — the same pool of one state in every edge leaving it runs once
        self.memo: _WeakMemo | None = _WeakMemo() if self.mode in ("darts", "gumbel") else None
        #: darts/gumbel: label → indices of options whose mixing weight is exactly 0
        self.dead: dict[str, frozenset[int]] = {}
        alphas = net.alphas
        sampled = self.mode in ("gumbel_hard", "binarized")
        #: a sampled path passes the straight-through gate when the logits train
        self.gate = sampled and torch.is_grad_enabled() and any(
            p.requires_grad for p in alphas.parameters())
        #: darts/gumbel with per-edge logits: cell key → (edge, op) pairs of weight 0
        self.dead_edges: dict[str, frozenset[tuple[int, ...]]] = {}
        if self.mode in ("darts", "gumbel"):
            def mix(name: str, k: str) -> torch.Tensor:
                a = alphas[k]
                w = (F.softmax(a, -1) if self.mode == "darts"
                     else F.gumbel_softmax(a, tau=net.tau, hard=False))
                self.weights[name] = w
                if self.mode == "gumbel":
                    net.last_mask[name] = w
                return w

            for label, k in net._label_keys.items():
                w = mix(label, k)
                dead = frozenset(i for i, z in enumerate((w == 0).tolist()) if z)
                if dead:
                    self.dead[label] = dead
            for cell, k in net._edge_keys.items():
                w = mix(cell, k)
                zero = (w == 0).nonzero().tolist()
                if zero:
                    self.dead_edges[cell] = frozenset(tuple(z) for z in zero)
        elif self.mode == "gumbel_hard":
            for label, k in net._label_keys.items():
                y = F.gumbel_softmax(alphas[k], tau=net.tau, hard=False)
                self.probs[label] = y  # the gate's straight-through term
                i = self.index[label] = int(y.detach().argmax())
                net.last_mask[label] = F.one_hot(torch.tensor(i), y.numel()).to(y) \
                    * (1 + y[i] - y[i].detach())
        elif self.mode == "binarized":
            two = self.gate and net.binary_paths == 2
            for label, k in net._label_keys.items():
                p = F.softmax(alphas[k], -1)
                self.probs[label] = p
                if two and p.numel() > 1:
                    ia, ib = (int(i) for i in torch.multinomial(p.detach(), 2))
                    pt = F.softmax(alphas[k][[ia, ib]], -1)
                    self.pairs[label] = (ia, ib, pt)
                    self.index[label] = ia if float(torch.rand(())) < pt[0].item() else ib
                else:
                    self.index[label] = int(torch.multinomial(p.detach(), 1))
            net.last_pairs = {lb: (a, b) for lb, (a, b, _) in self.pairs.items()}
        else:
            self.index = net._path_index
        if sampled:
            net.last_path = {lb: net._options[lb][i] for lb, i in self.index.items()}

    def pick(self, label: str) -> int:
        try:
            return self.index[label]
        except KeyError:
            raise AssignmentError(
                f"the supernet path leaves out decision {label!r}",
                hint="call set_path with a full assignment (single mode)") from None

    def _pair_terms(self, labels: tuple[str, ...], key: tuple[int, ...],
                    cands: dict[tuple[int, ...], Any], out: torch.Tensor) -> torch.Tensor:
        """Zero in the forward; its gradient gives each sampled pair's softmax ``p_j``
        the binary-gate gradient ``∂L/∂g_j = ⟨∂L/∂out, o_j⟩`` (ProxylessNAS, two paths).
        The inactive option's output ``o_j`` runs without grad (its weights get none)."""
        total = torch.zeros(())
        for pos, lb in enumerate(labels):
            if lb not in self.pairs:
                continue
            ia, ib, pt = self.pairs[lb]
            for j, idx in enumerate((ia, ib)):
                if idx == key[pos]:
                    o = out.detach()
                else:
                    alt = cands.get((*key[:pos], idx, *key[pos + 1:]))
                    if alt is None:  # that combination does not verify: no gate term
                        continue
                    with torch.no_grad():
                        o = alt()
                total = total + (pt[j] - pt[j].detach()) * o
        return total

    def mix(self, labels: tuple[str, ...], cands: dict[tuple[int, ...], Any],
            zeros: frozenset[tuple[int, ...]] = frozenset()) -> torch.Tensor:
        """Combine candidate thunks keyed by option-index tuples of ``labels``;
        ``zeros``: the keys whose candidate outputs all-zeros (a ``zero`` op)."""
        if self.mode in ONE_PATH:
            key = tuple(self.pick(lb) for lb in labels)
            fn = cands.get(key)
            if fn is None:
                raise AssignmentError(f"no valid candidate for {dict(zip(labels, key))}",
                                      hint="this combination of values does not verify")
            out = fn()
            if self.pairs:
                return out + self._pair_terms(labels, key, cands, out)
            if self.gate:
                g = torch.ones(())
                for lb, i in zip(labels, key):
                    p = self.probs[lb][i]
                    g = g * (1 + p - p.detach())
                out = _Gate.apply(out, g)
            return out
        total: torch.Tensor | None = None
        dead = [self.dead.get(lb, frozenset()) for lb in labels]
        # Candidates that add exactly 0 to the output and to every gradient are not run:
        # a ``zero`` op (w·0 = 0, ∂L/∂w = ⟨∂L/∂out, 0⟩ = 0) and a candidate whose weight
        # is exactly 0 (a logit at -inf: an option pinned off or removed, as DARTS-PT's
        # selection sets them; ∂softmax_i/∂α = 0 where softmax_i = 0).
        for key, fn in _live(cands, lambda key: key in zeros or any(
                i in d for i, d in zip(key, dead))).items():
            w = self.weights[labels[0]][key[0]]
            for lb, i in zip(labels[1:], key[1:]):
                w = w * self.weights[lb][i]
            term = fn() * w
            total = term if total is None else total + term
        assert total is not None
        return total

    def mix_edges(self, cell: str, cands: dict[tuple[int, ...], Any],
                  zeros: frozenset[tuple[int, ...]]) -> torch.Tensor:
        """A DARTS cell node: the sum over every (edge, op) candidate of its output times
        the softmax weight of that op on that edge (the same work skipping as :meth:`mix`)."""
        w = self.weights[cell]
        dead = self.dead_edges.get(cell, frozenset())
        total: torch.Tensor | None = None
        for key, fn in _live(cands, lambda key: key in zeros or key in dead).items():
            term = fn() * w[key]
            total = term if total is None else total + term
        assert total is not None
        return total

def _live(cands: dict[tuple[int, ...], Any], skip: Any) -> dict[tuple[int, ...], Any]:
    """The candidates that ``skip(key)`` does not leave out, or, if it leaves out all of
    them, the first one (it runs for the output's shape)."""
    live = {key: fn for key, fn in cands.items() if not skip(key)}
    if not live:
        key = next(iter(cands))
        live = {key: cands[key]}
    return live
