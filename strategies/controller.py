"""An autoregressive LSTM controller over a space's decision schema (torch, CPU).

Zoph & Le (2017): an LSTM emits one decision at a time; step ``k`` reads the embedding of
the option chosen at step ``k−1`` (a start token at step 0) and a per-decision softmax head
gives the distribution over decision ``k``'s domain. ENAS-style logit shaping
(``tanh_constant · tanh(logits / temperature)``) is optional; ``tanh_reduce`` divides the
constant per decision (ENAS micro: ``op_tanh_reduce`` 2.5 on the op decisions,
``micro_controller.py``).

Input decisions whose options are every subset of some candidates that holds the
``required`` ones (``SpaceBuilder.select_any``: NAS-RL anchors, ENAS macro skips; see
:class:`SubsetInput`) are sampled one of two ways (:data:`INPUT_SAMPLINGS`):

* ``"subset_softmax"``: like any decision, one softmax over the options (``2^f`` of them
  for ``f`` free candidates);
* ``"anchor_attention"`` (Zoph & Le §3.3; ENAS's ``general_controller.py``): the decision
  is an *anchor point*. Each free candidate ``j`` is an input independently with
  ``p_j = σ(vᵀ tanh(W_prev·h_j + W_curr·h_i))``, where ``h_i`` is the controller's hidden
  state at this anchor and ``h_j`` the one at candidate ``j``'s anchor; required
  candidates are always on. A sample's log-probability is the sum of the Bernoulli
  log-probabilities, its entropy the sum of their entropies; the next step reads the
  mean of the chosen anchors' states, ``Σ_chosen h_j / (1 + #chosen)`` (ENAS), instead of
  an option embedding. The logit shaping applies to the score inside ``σ``.

Which anchor keys a candidate (the decision schema holds no layer numbers, so it is a
rule over the order of the anchor decisions): the free candidates, in index order, are
the oldest layers; they take the anchors of the most recent earlier anchor decisions,
right-aligned, with the required candidates as the newest layers after them
(``anchor_keys="own"``: every layer keyed by its own anchor, as Zoph & Le write it —
exact for ``nasrl`` and ``enas_macro``, whose required candidate is the predecessor or
the layer itself) or without them (``"next"``: a layer keyed by the anchor of the layer
it feeds, as ENAS's code pairs skip bit ``j`` with anchor ``j``). Layers before the first
anchor decision (the stem, the first layers) have no anchor step: they are keyed by
learned start anchors (ENAS runs an extra LSTM step for layer 0 instead).

When no candidate is required and every Bernoulli comes out 0, the empty set is no
option: the decision is then sampled from the Bernoullis *conditioned* on at least one
input (exact, one uniform per candidate, and the log-probability and entropy are the
conditional ones). The paper spaces never get there: their predecessor is required.

ENAS's skip penalty: :meth:`Controller.scores` also returns, per sequence, the mean over
anchor decisions of ``Σ_j KL(Bernoulli(p_j) ‖ Bernoulli(skip_target))`` (ENAS:
``skip_target`` 0.4, weighted 0.8 in the loss by ``scripts/cifar10_macro_search.sh``;
:meth:`Controller.loss`). ENAS's code samples with ``σ(2s)`` but takes the penalty on
``σ(s)`` (so its skip rate settles near 0.31, not 0.4); here both use the sampling
probability ``p_j``, which the penalty pulls to the target itself, as the paper says.

Randomness: parameters are initialised uniformly in ``[−init, init]`` from a numpy
generator and samples are drawn with a numpy generator, so a strategy stays reproducible
from its own ``rng`` alone.

>>> c = Controller([5, 5, 3], rng=np.random.default_rng(0))
>>> idx, logp, ent = c.sample(np.random.default_rng(1))
>>> len(idx), all(0 <= i < s for i, s in zip(idx, [5, 5, 3]))
(3, True)
>>> lp, _ = c.log_prob([idx])
>>> abs(float(lp[0].detach()) - logp) < 1e-5
True

Anchor attention over two ``select_any``-style decisions (candidate 0 required):

>>> opts = [[(0,), (0, 1)], [(0,), (0, 1), (0, 2), (0, 1, 2)]]
>>> inputs = [SubsetInput.of(o) for o in opts]
>>> c = Controller([4, 2, 4], rng=np.random.default_rng(0), inputs=[None, *inputs])
>>> idx, logp, _ = c.sample(np.random.default_rng(1))
>>> sc = c.scores([idx])
>>> abs(float(sc.log_prob[0].detach()) - logp) < 1e-5, float(sc.skip_kl[0].detach()) > 0
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasir.errors import SpecError

__all__ = ["ANCHOR_KEYS", "ENAS_INPUTS", "INPUT_SAMPLINGS", "Controller", "Scores",
           "SubsetInput", "controller_for", "enas_controller", "single_thread"]

#: how input decisions are sampled; the first is NAS-RL's and ENAS's way
INPUT_SAMPLINGS = ("anchor_attention", "subset_softmax")
#: which earlier anchor keys a candidate (see the module docstring)
ANCHOR_KEYS = ("own", "next")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after).

    The controller's tensors are tiny: with several threads on a busy machine torch spends
    its time synchronising them (measured 100× slower on 2 loaded cores).
    """
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


@dataclass(frozen=True)
class SubsetInput:
    """An input decision whose options are all subsets of its candidates that hold
    ``required`` (without the empty set when ``required`` is empty), as sorted tuples:
    sampled as one Bernoulli per ``free`` candidate.

    >>> s = SubsetInput.of([(0,), (0, 1), (0, 2), (0, 1, 2)])
    >>> s.required, s.free, s.option([1, 0]), s.bits(3)
    ((0,), (1, 2), 1, (1, 1))
    >>> SubsetInput.of([0, 1, 2]) is None, SubsetInput.of([(0, 1), (0, 2), (1, 2)]) is None
    (True, True)
    """

    required: tuple[int, ...]
    free: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]
    _index: dict[tuple[int, ...], int] = field(default_factory=dict, compare=False,
                                               repr=False)

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update({o: i for i, o in enumerate(self.options)})

    @staticmethod
    def of(options: Sequence[Any]) -> SubsetInput | None:
        """The subset structure of a decision's options, or ``None`` when they are not
        every subset above a required set (at least one free candidate)."""
        opts: list[tuple[int, ...]] = []
        for o in options:
            if not isinstance(o, tuple | list) or not all(
                    isinstance(i, int | np.integer) and not isinstance(i, bool) for i in o):
                return None
            opts.append(tuple(int(i) for i in o))
        if not opts or any(list(o) != sorted(set(o)) for o in opts):
            return None
        cands = sorted(set().union(*map(set, opts)))
        req = set(opts[0]).intersection(*map(set, opts))
        free = [i for i in cands if i not in req]
        if not free or len(free) > 30:
            return None
        if len(set(opts)) != len(opts) or len(opts) != 2 ** len(free) - (0 if req else 1):
            return None
        return SubsetInput(tuple(sorted(req)), tuple(free), tuple(opts))

    @property
    def size(self) -> int:
        """Number of options."""
        return len(self.options)

    def option(self, bits: Sequence[int]) -> int:
        """The option index holding the required candidates and ``free[t]`` where
        ``bits[t]`` is set (``SpecError`` for the empty set when it is no option)."""
        chosen = tuple(sorted(self.required + tuple(
            j for j, b in zip(self.free, bits, strict=True) if b)))
        got = self._index.get(chosen)
        if got is None:
            raise SpecError(f"input subset {chosen} is not an option",
                            hint="a decision without required candidates needs one input")
        return got

    def bits(self, option: int) -> tuple[int, ...]:
        """The free candidates' 0/1 in option ``option``."""
        chosen = set(self.options[option])
        return tuple(int(j in chosen) for j in self.free)


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


def _draw_bits(p: np.ndarray, nonempty: bool, rng: np.random.Generator | None,
               greedy: bool) -> np.ndarray:
    """Independent Bernoullis (conditioned on one being on when ``nonempty``)."""
    if greedy or rng is None:
        bits = (p > 0.5).astype(np.float64)
        if nonempty and not bits.any():
            bits[int(np.argmax(p))] = 1.0
        return bits
    u = rng.random(len(p))
    if not nonempty:
        return (u < p).astype(np.float64)
    # exact sequential draw from the conditional: until the first 1, candidate t is on
    # with p_t / P(some candidate >= t is on)
    rest = np.cumprod((1.0 - p)[::-1])[::-1]  # P(all candidates >= t are off)
    bits = np.zeros(len(p))
    on = False
    for t in range(len(p)):
        pt = p[t] if on else p[t] / max(1.0 - rest[t], 1e-300)
        if u[t] < pt:
            bits[t], on = 1.0, True
    return bits


def _bern_terms(s: np.ndarray, bits: np.ndarray, nonempty: bool) -> tuple[float, float]:
    """Log-probability of ``bits`` and entropy under independent Bernoullis ``σ(s)``
    (conditional on a non-empty set when ``nonempty``)."""
    lp1, lp0 = -np.logaddexp(0.0, -s), -np.logaddexp(0.0, s)
    logp = float(np.sum(bits * lp1 + (1 - bits) * lp0))
    ent = float(-np.sum(np.exp(lp1) * lp1 + np.exp(lp0) * lp0))
    if nonempty:
        log_p0 = float(np.sum(lp0))
        p0 = np.exp(log_p0)
        logz = float(np.log(-np.expm1(log_p0)))
        logp -= logz
        ent = (ent + p0 * log_p0) / (1 - p0) + logz
    return logp, ent


def _bern_terms_torch(s: torch.Tensor, bits: torch.Tensor, nonempty: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch form of :func:`_bern_terms` from the scores ``s`` (``p = σ(s)``), ``[B]``."""
    lp1, lp0 = F.logsigmoid(s), F.logsigmoid(-s)
    logp = (bits * lp1 + (1 - bits) * lp0).sum(1)
    ent = -(lp1.exp() * lp1 + lp0.exp() * lp0).sum(1)
    if nonempty:
        log_p0 = lp0.sum(1)
        p0 = log_p0.exp()
        logz = torch.log(-torch.expm1(log_p0))
        logp = logp - logz
        ent = (ent + p0 * log_p0) / (1 - p0) + logz
    return logp, ent


def _kl_torch(s: torch.Tensor, target: float) -> torch.Tensor:
    """``Σ_j KL(Bern(σ(s_j)) ‖ Bern(target))`` per row."""
    lp1, lp0 = F.logsigmoid(s), F.logsigmoid(-s)
    p = lp1.exp()
    return (p * (lp1 - np.log(target)) + (1 - p) * (lp0 - np.log1p(-target))).sum(1)


def controller_for(decisions: Sequence[tuple[str, Sequence[Any]]], rng: np.random.Generator,
                   *, input_sampling: str = "anchor_attention", anchor_keys: str = "own",
                   skip_target: float = 0.4, skip_weight: float = 0.0,
                   op_tanh_reduce: float = 1.0, **options: Any) -> Controller:
    """A controller over ``(kind, options)`` decisions: with ``input_sampling=
    "anchor_attention"`` the ``input`` decisions with subset options are anchor points,
    the rest softmaxes (``options``: the :class:`Controller`'s other arguments). The
    ``op`` decisions' tanh constant is divided by ``op_tanh_reduce`` (ENAS micro: 2.5).

    >>> c = controller_for([("value", (1, 2)), ("input", [(0,), (0, 1)])],
    ...                    np.random.default_rng(0))
    >>> c.inputs[0] is None, c.inputs[1].free
    (True, (1,))
    """
    if input_sampling not in INPUT_SAMPLINGS:
        raise SpecError(f"unknown input_sampling {input_sampling!r}",
                        hint=f"use one of {', '.join(INPUT_SAMPLINGS)}")
    inputs = [SubsetInput.of(opts) if kind == "input" and input_sampling == "anchor_attention"
              else None for kind, opts in decisions]
    return Controller([len(opts) for _, opts in decisions], rng, inputs=inputs,
                      anchor_keys=anchor_keys, skip_target=skip_target,
                      skip_weight=skip_weight, tanh_reduce=[
                          op_tanh_reduce if kind == "op" else 1.0 for kind, _ in decisions],
                      **options)


#: ENAS's input decisions (melodyguan/enas ``general_controller.py`` with the settings of
#: ``scripts/cifar10_macro_search.sh``: ``--controller_skip_target=0.4``,
#: ``--controller_skip_weight=0.8``). Its code keys skip bit ``j`` by anchor ``j`` and
#: samples the bit from a two-way softmax over ``[−s, s]`` (``s`` the shaped score), that
#: is ``p = σ(2s)``: with ``tanh_constant`` 1.5, ``p`` lies in ``σ(±3)``, not ``σ(±1.5)``.
ENAS_INPUTS: dict[str, Any] = {"input_sampling": "anchor_attention", "anchor_keys": "next",
                               "skip_target": 0.4, "skip_weight": 0.8,
                               "skip_logit_scale": 2.0}


def enas_controller(space: Any, options: Mapping[str, Sequence[Any]],
                    rng: np.random.Generator, **settings: Any) -> Controller:
    """ENAS's controller over the free decisions ``options`` (label → options, e.g. a
    supernet's ``decisions()``) of ``space``: :data:`ENAS_INPUTS` unless ``settings``
    override them (``settings`` also takes the :class:`Controller`'s other arguments).

    >>> from nasir.spaces import get_space
    >>> sp = get_space("enas_macro", input_shape=(1, 8, 8), layers=3)
    >>> c = enas_controller(sp, {d.label: d.options for d in sp.decisions},
    ...                     np.random.default_rng(0), tanh_constant=1.5)
    >>> c.skip_weight, c.skip_target, c.anchor_keys, sum(s is not None for s in c.inputs)
    (0.8, 0.4, 'next', 2)
    """
    kinds = {d.label: d.kind for d in space.decisions}
    return controller_for([(kinds.get(lb, "value"), opts) for lb, opts in options.items()],
                          rng, **{**ENAS_INPUTS, **settings})
