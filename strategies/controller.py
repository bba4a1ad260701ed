"""An autoregressive LSTM controller over a space's decision schema (torch, CPU).

Zoph & Le (2017): an LSTM emits one decision at a time; step ``k`` reads the embedding of
the option chosen at step ``k−1`` (a start token at step 0) and a per-decision softmax head
gives the distribution over decision ``k``'s domain. ENAS-style logit shaping
(``tanh_constant · tanh(logits / temperature)``) is optional.

Randomness: parameters are initialised uniformly in ``[−init, init]`` from a numpy
generator and samples are drawn with a numpy generator, so a strategy stays reproducible
from its own ``rng`` alone.

>>> import numpy as np
>>> c = Controller([5, 5, 3], rng=np.random.default_rng(0))
>>> idx, logp, ent = c.sample(np.random.default_rng(1))
>>> len(idx), all(0 <= i < s for i, s in zip(idx, [5, 5, 3]))
(3, True)
>>> lp, _ = c.log_prob([idx])
>>> abs(float(lp[0].detach()) - logp) < 1e-5
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
from torch import nn

from nasir.errors import SpecError

__all__ = ["Controller", "single_thread"]


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


class Controller(nn.Module):
    """LSTM policy over decisions with domain sizes ``sizes``."""

    def __init__(self, sizes: Sequence[int], rng: np.random.Generator, hidden: int = 64,
                 init: float = 0.1, temperature: float | None = None,
                 tanh_constant: float | None = None) -> None:
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise SpecError("the controller needs at least one decision with options")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.start = int(sum(self.sizes))
        self.hidden = hidden
        self.embed = nn.Embedding(self.start + 1, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList([nn.Linear(hidden, s) for s in self.sizes])
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self._np: dict | None = None
        with torch.no_grad():
            for p in self.parameters():
                vals = rng.uniform(-init, init, size=tuple(p.shape)).astype(np.float32)
                p.copy_(torch.from_numpy(vals))

    def _logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        z = self.heads[k](h)
        if self.temperature:
            z = z / self.temperature
        if self.tanh_constant:
            z = self.tanh_constant * torch.tanh(z)
        return z

    def _tokens(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        return idx + int(self.offsets[k])

    def invalidate(self) -> None:
        """Forget the numpy copy of the weights (call after every optimizer step)."""
        self._np = None

    def _numpy(self) -> dict:
        cached = getattr(self, "_np", None)
        if cached is None:
            with torch.no_grad():
                cached = {
                    "embed": self.embed.weight.double().numpy().copy(),
                    "w_ih": self.cell.weight_ih.double().numpy().T.copy(),
                    "w_hh": self.cell.weight_hh.double().numpy().T.copy(),
                    "b": (self.cell.bias_ih + self.cell.bias_hh).double().numpy().copy(),
                    "heads": [(lin.weight.double().numpy().T.copy(),
                               lin.bias.double().numpy().copy())
                              for lin in (cast(nn.Linear, hd) for hd in self.heads)],
                }
            self._np = cached
        return cached

    def sample(self, rng: np.random.Generator, greedy: bool = False
               ) -> tuple[list[int], float, float]:
        """One decision sequence: option indices, their log-probability and the entropy.

        Sampling needs no gradient, so it runs the same LSTM on a float64 numpy copy of
        the weights (refreshed after each update): far cheaper than torch's per-op
        overhead for a batch of one.
        """
        w = self._numpy()
        hsz = self.hidden
        h = np.zeros(hsz)
        c = np.zeros(hsz)
        x = w["embed"][self.start]
        out: list[int] = []
        logp = ent = 0.0
        for k, size in enumerate(self.sizes):
            gates = x @ w["w_ih"] + h @ w["w_hh"] + w["b"]
            i_g = 1.0 / (1.0 + np.exp(-gates[:hsz]))
            f_g = 1.0 / (1.0 + np.exp(-gates[hsz:2 * hsz]))
            g_g = np.tanh(gates[2 * hsz:3 * hsz])
            o_g = 1.0 / (1.0 + np.exp(-gates[3 * hsz:]))
            c = f_g * c + i_g * g_g
            h = o_g * np.tanh(c)
            wk, bk = w["heads"][k]
            z = h @ wk + bk
            if self.temperature:
                z = z / self.temperature
            if self.tanh_constant:
                z = self.tanh_constant * np.tanh(z)
            z = z - z.max()
            lp = z - np.log(np.exp(z).sum())
            p = np.exp(lp)
            if greedy:
                i = int(np.argmax(p))
            else:
                cdf = np.cumsum(p)
                i = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")),
                        size - 1)
            out.append(i)
            logp += float(lp[i])
            ent -= float(np.sum(p * lp))
            x = w["embed"][int(self.offsets[k]) + i]
        return out, logp, ent

    def log_prob(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[B]`` and summed entropies ``[B]`` of given sequences
        (differentiable)."""
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
        for k in range(len(self.sizes)):
            h, c = self.cell(x, (h, c))
            lp = torch.log_softmax(self._logits(k, h), dim=-1)
            logp = logp + lp.gather(1, idx[:, k:k + 1]).squeeze(1)
            ent = ent - (lp.exp() * lp).sum(dim=1)
            x = self.embed(self._tokens(k, idx[:, k]))
        return logp, ent
