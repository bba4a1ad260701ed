"""How the controller samples an input decision whose options are every subset above a
required set: the subset structure (:class:`SubsetInput`), the sampling modes
(:data:`INPUT_SAMPLINGS`, :data:`ANCHOR_KEYS`) and the Bernoulli maths of anchor attention
(draws conditioned on a non-empty set, log-probabilities, entropies, the skip KL) in numpy
and torch. :mod:`~nasir.strategies.controller` describes the whole scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasir.errors import SpecError

__all__ = ["ANCHOR_KEYS", "INPUT_SAMPLINGS", "SubsetInput"]

#: how input decisions are sampled; the first is NAS-RL's and ENAS's way
INPUT_SAMPLINGS = ("anchor_attention", "subset_softmax")
#: which earlier anchor keys a candidate (see the module docstring)
ANCHOR_KEYS = ("own", "next")


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
