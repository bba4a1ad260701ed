"""The LSTM policy itself: :class:`Controller` (sampling in numpy, scoring and the REINFORCE
loss in torch) and its differentiable :class:`Scores`. :mod:`~nasir.strategies.controller`
describes the model, anchor attention and the skip penalty, and builds controllers from
decision kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import nn

from nasir.errors import SpecError
from nasir.strategies.controller_inputs import (
    ANCHOR_KEYS,
    SubsetInput,
    _bern_terms,
    _bern_terms_torch,
    _draw_bits,
    _kl_torch,
)

__all__ = ["Controller", "Scores"]


class Scores(NamedTuple):
    """Differentiable scores of a batch of sequences (each ``[B]``)."""

    log_prob: torch.Tensor
    entropy: torch.Tensor
    #: mean over anchor decisions of ``Σ_j KL(Bern(p_j) ‖ Bern(skip_target))`` (0 if none)
    skip_kl: torch.Tensor


class Controller(nn.Module):
    """LSTM policy over decisions with domain sizes ``sizes``.

    ``inputs`` (one :class:`SubsetInput` or ``None`` per decision) marks the decisions
    sampled by anchor attention (see the module docstring); ``anchor_keys`` picks which
    earlier anchor keys a candidate, ``skip_target`` is the KL penalty's target and
    ``skip_weight`` its weight in :meth:`loss`; ``skip_logit_scale`` multiplies the
    (shaped) attention score inside ``σ`` (ENAS's code: 2, see :data:`ENAS_INPUTS`);
    ``tanh_reduce`` (one divisor per decision) shapes softmax decision ``k`` with
    ``tanh_constant / tanh_reduce[k]``.
    """

    def __init__(self, sizes: Sequence[int], rng: np.random.Generator, hidden: int = 64,
                 init: float = 0.1, temperature: float | None = None,
                 tanh_constant: float | None = None, *,
                 inputs: Sequence[SubsetInput | None] | None = None,
                 anchor_keys: str = "own", skip_target: float = 0.4,
                 skip_weight: float = 0.0, skip_logit_scale: float = 1.0,
                 tanh_reduce: Sequence[float] | None = None) -> None:
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise SpecError("the controller needs at least one decision with options")
        self.inputs = list(inputs) if inputs is not None else [None] * len(self.sizes)
        if len(self.inputs) != len(self.sizes) or any(
                s is not None and s.size != n for s, n in zip(self.inputs, self.sizes)):
            raise SpecError("controller inputs must give one SubsetInput or None per "
                            "decision, with the decision's number of options")
        if anchor_keys not in ANCHOR_KEYS:
            raise SpecError(f"unknown anchor_keys {anchor_keys!r}",
                            hint=f"use one of {', '.join(ANCHOR_KEYS)}")
        if not 0 < skip_target < 1:
            raise SpecError(f"skip_target must lie in (0, 1), got {skip_target}")
        if skip_weight < 0:
            raise SpecError(f"skip_weight must be >= 0, got {skip_weight}")
        self.anchor_keys, self.skip_target = anchor_keys, float(skip_target)
        self.skip_weight = float(skip_weight)
        self.skip_logit_scale = float(skip_logit_scale)
        tokens = [0 if s is not None else n for s, n in zip(self.inputs, self.sizes)]
        self.offsets = np.concatenate([[0], np.cumsum(tokens)[:-1]]).astype(np.int64)
        self.start = int(sum(tokens))
        self.hidden = hidden
        self.embed = nn.Embedding(self.start + 1, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        soft = [k for k, s in enumerate(self.inputs) if s is None]
        self._head = {k: j for j, k in enumerate(soft)}
        self.heads = nn.ModuleList([nn.Linear(hidden, self.sizes[k]) for k in soft])
        self.slots = self._slots()
        n_start = max([-int(a.min()) for a in self.slots.values()] + [0])
        if self.slots:
            self.w_prev = nn.Linear(hidden, hidden, bias=False)
            self.w_curr = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Linear(hidden, 1, bias=False)
            self.start_anchors = nn.Parameter(torch.zeros(max(n_start, 1), hidden))
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.tanh_reduce = [1.0] * len(self.sizes) if tanh_reduce is None else \
            [float(r) for r in tanh_reduce]
        if len(self.tanh_reduce) != len(self.sizes) or min(self.tanh_reduce) <= 0:
            raise SpecError("tanh_reduce needs one positive divisor per decision")
        self._np: dict | None = None
        with torch.no_grad():
            for p in self.parameters():
                vals = rng.uniform(-init, init, size=tuple(p.shape)).astype(np.float32)
                p.copy_(torch.from_numpy(vals))

    def _slots(self) -> dict[int, np.ndarray]:
        """Per anchor decision ``k``: for each free candidate, the index of the earlier
        anchor keying it (``a ≥ 0``) or the start anchor ``-a - 1`` (``a < 0``)."""
        out: dict[int, np.ndarray] = {}
        for m, k in enumerate(k for k, s in enumerate(self.inputs) if s is not None):
            s = cast(SubsetInput, self.inputs[k])
            shift = len(s.required) if self.anchor_keys == "own" else 0
            out[k] = m - len(s.free) - shift + np.arange(len(s.free))
        return out

    def _shape(self, z: Any, k: int | None = None) -> Any:
        if self.temperature:
            z = z / self.temperature
        if self.tanh_constant:
            c = self.tanh_constant / (1.0 if k is None else self.tanh_reduce[k])
            z = c * (torch.tanh(z) if isinstance(z, torch.Tensor) else np.tanh(z))
        return z

    def _logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return self._shape(self.heads[self._head[k]](h), k)

    def _tokens(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        return idx + int(self.offsets[k])

    def invalidate(self) -> None:
        """Forget the numpy copy of the weights (call after every optimizer step)."""
        self._np = None

    def _numpy(self) -> dict:
        cached = getattr(self, "_np", None)
        if cached is None:
            def arr(t: torch.Tensor) -> np.ndarray:
                return t.detach().double().numpy().copy()

            with torch.no_grad():
                heads = [cast(nn.Linear, hd) for hd in self.heads]
                cached = {
                    "embed": arr(self.embed.weight),
                    "w_ih": arr(self.cell.weight_ih).T, "w_hh": arr(self.cell.weight_hh).T,
                    "b": arr(self.cell.bias_ih + self.cell.bias_hh),
                    "heads": [(arr(lin.weight).T, arr(lin.bias)) for lin in heads],
                }
                if self.slots:
                    cached.update(w_prev=arr(self.w_prev.weight).T,
                                  w_curr=arr(self.w_curr.weight).T, v=arr(self.v.weight)[0],
                                  starts=arr(self.start_anchors))
            self._np = cached
        return cached

    # -- numpy walk (sampling, inspection) ------------------------------------------------
    def _lstm_np(self, w: dict, x: np.ndarray, h: np.ndarray, c: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        hsz = self.hidden
        gates = x @ w["w_ih"] + h @ w["w_hh"] + w["b"]
        i_g = 1.0 / (1.0 + np.exp(-gates[:hsz]))
        f_g = 1.0 / (1.0 + np.exp(-gates[hsz:2 * hsz]))
        g_g = np.tanh(gates[2 * hsz:3 * hsz])
        o_g = 1.0 / (1.0 + np.exp(-gates[3 * hsz:]))
        c = f_g * c + i_g * g_g
        return o_g * np.tanh(c), c

    def _keys_np(self, w: dict, k: int, anchors: list[np.ndarray]) -> np.ndarray:
        return np.stack([anchors[a] if a >= 0 else w["starts"][-a - 1]
                         for a in self.slots[k]])

    def _scores_np(self, w: dict, keys: np.ndarray, h: np.ndarray) -> np.ndarray:
        return self.skip_logit_scale * self._shape(
            np.tanh(keys @ w["w_prev"] + h @ w["w_curr"]) @ w["v"])

    def _walk(self, rng: np.random.Generator | None, greedy: bool = False,
              forced: Sequence[int] | None = None) -> tuple[list[int], float, float,
                                                            list[np.ndarray]]:
        """Run the controller once: sample (or follow ``forced``); return the indices,
        log-probability, entropy and per-decision distributions (inclusion probabilities
        over the free candidates for anchor decisions)."""
        w = self._numpy()
        h = np.zeros(self.hidden)
        c = np.zeros(self.hidden)
        x = w["embed"][self.start]
        anchors: list[np.ndarray] = []
        out: list[int] = []
        dists: list[np.ndarray] = []
        logp = ent = 0.0
        for k, size in enumerate(self.sizes):
            h, c = self._lstm_np(w, x, h, c)
            f = None if forced is None else int(forced[k])
            sub = self.inputs[k]
            if sub is None:
                i, lp, en, p = self._softmax_np(w, k, size, h, rng, greedy, f)
                x = w["embed"][int(self.offsets[k]) + i]
            else:
                keys = self._keys_np(w, k, anchors)
                s = self._scores_np(w, keys, h)
                p = 1.0 / (1.0 + np.exp(-s))
                bits = _draw_bits(p, not sub.required, rng, greedy) if f is None \
                    else np.asarray(sub.bits(f), dtype=np.float64)
                i = sub.option(bits.tolist())
                lp, en = _bern_terms(s, bits, not sub.required)
                x = (bits @ keys) / (1.0 + bits.sum())
                anchors.append(h)
            out.append(i)
            dists.append(p)
            logp += lp
            ent += en
        return out, logp, ent, dists

    def _softmax_np(self, w: dict, k: int, size: int, h: np.ndarray,
                    rng: np.random.Generator | None, greedy: bool, forced: int | None
                    ) -> tuple[int, float, float, np.ndarray]:
        wk, bk = w["heads"][self._head[k]]
        z = self._shape(h @ wk + bk, k)
        z = z - z.max()
        lp = z - np.log(np.exp(z).sum())
        p = np.exp(lp)
        if forced is not None:
            i = forced
        elif greedy or rng is None:
            i = int(np.argmax(p))
        else:
            cdf = np.cumsum(p)
            i = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")),
                    size - 1)
        return i, float(lp[i]), -float(np.sum(p * lp)), p

    def sample(self, rng: np.random.Generator, greedy: bool = False
               ) -> tuple[list[int], float, float]:
        """One decision sequence: option indices, their log-probability and the entropy.

        Sampling needs no gradient, so it runs the same LSTM on a float64 numpy copy of
        the weights (refreshed after each update): far cheaper than torch's per-op
        overhead for a batch of one.
        """
        idx, logp, ent, _ = self._walk(rng, greedy)
        return idx, logp, ent

    def distributions(self, idx: Sequence[int] | None = None) -> list[np.ndarray]:
        """Per-decision distributions along ``idx`` (default: the greedy sequence): the
        softmax over the options, or for an anchor decision each free candidate's
        probability of being an input (before any conditioning on a non-empty set)."""
        return self._walk(None, greedy=True, forced=idx)[3]

    # -- torch (differentiable) -----------------------------------------------------------
    def log_prob(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[B]`` and summed entropies ``[B]`` of given sequences
        (differentiable)."""
        sc = self.scores(batch)
        return sc.log_prob, sc.entropy

    def scores(self, batch: Sequence[Sequence[int]]) -> Scores:
        """Log-probabilities, entropies and skip penalties of given sequences
        (differentiable; see :class:`Scores`)."""
        idx = torch.as_tensor(np.asarray(batch, dtype=np.int64).reshape(len(batch), -1))
        if idx.shape[1] != len(self.sizes):
            raise SpecError(f"sequences have {idx.shape[1]} decisions, the controller "
                            f"{len(self.sizes)}")
        n = idx.shape[0]
        h = torch.zeros(n, self.hidden)
        c = torch.zeros(n, self.hidden)
        x = self.embed(torch.full((n,), self.start, dtype=torch.long))
        logp = torch.zeros(n)
        ent = torch.zeros(n)
        kl = torch.zeros(n)
        anchors: list[torch.Tensor] = []
        for k, sub in enumerate(self.inputs):
            h, c = self.cell(x, (h, c))
            if sub is None:
                lp = torch.log_softmax(self._logits(k, h), dim=-1)
                logp = logp + lp.gather(1, idx[:, k:k + 1]).squeeze(1)
                ent = ent - (lp.exp() * lp).sum(dim=1)
                x = self.embed(self._tokens(k, idx[:, k]))
                continue
            bits = torch.as_tensor(np.array([sub.bits(int(i)) for i in idx[:, k]],
                                            dtype=np.float32).reshape(n, -1))
            keys = torch.stack([anchors[a] if a >= 0 else
                                self.start_anchors[-a - 1].expand(n, -1)
                                for a in self.slots[k]], dim=1)
            s = self.skip_logit_scale * self._shape(self.v(torch.tanh(
                self.w_prev(keys) + self.w_curr(h).unsqueeze(1))).squeeze(-1))
            lp_b, ent_b = _bern_terms_torch(s, bits, not sub.required)
            logp, ent = logp + lp_b, ent + ent_b
            kl = kl + _kl_torch(s, self.skip_target)
            x = (bits.unsqueeze(-1) * keys).sum(1) / (1.0 + bits.sum(1, keepdim=True))
            anchors.append(h)
        if self.slots:
            kl = kl / len(self.slots)
        return Scores(logp, ent, kl)


    def penalty(self, sc: Scores) -> torch.Tensor:
        """ENAS's skip penalty term of a loss: ``skip_weight · mean(skip_kl)``."""
        return self.skip_weight * sc.skip_kl.mean()

    def loss(self, batch: Sequence[Sequence[int]], advantages: Sequence[float],
             entropy: float = 0.0) -> torch.Tensor:
        """REINFORCE loss of sampled sequences with their advantages ``R − b``:
        ``−mean(A · log π) − entropy · mean(H) + skip_weight · mean(skip KL)`` (ENAS's
        ``general_controller.build_trainer``; its entropy enters the reward instead).

        >>> c = Controller([3], np.random.default_rng(0))
        >>> abs(c.loss([[1]], [1.0]).item() + c.log_prob([[1]])[0].item()) < 1e-6
        True
        """
        sc = self.scores(batch)
        adv = torch.as_tensor(np.asarray(advantages, dtype=np.float32))
        return -(adv * sc.log_prob).mean() - entropy * sc.entropy.mean() + self.penalty(sc)
