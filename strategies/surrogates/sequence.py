"""PNAS's accuracy predictors: LSTM or MLP ensembles over a cell's token sequence (numpy).

Liu et al. (ECCV 2018, Sec. 3.3 and 5.2) read a cell of ``b`` blocks as the sequence of its
``4b`` tokens (each block's two inputs and two ops) and compare two predictors, each as an
ensemble of 5 trained with an L1 loss:

* ``lstm``: token embeddings (inputs share one table, ops another) read by an LSTM; the
  final hidden state goes through a linear layer and a sigmoid.
* ``mlp``: the embeddings of a block's tokens are concatenated, averaged over the cell's
  blocks (so a ``b``-block and a ``b+1``-block cell share every weight), and fed to a
  ReLU MLP with a sigmoid output.

Input rows are token ids (``-1`` pads blocks a cell does not build, at the end): ``head``
leading tokens outside any block, then blocks of ``block`` tokens. Which embedding a token
uses is the caller's choice (PNAS maps decisions of one kind and option to one id, see
:class:`nasir.strategies.pnas.TokenLayout`). Targets are mapped affinely into [0.1, 0.9]
(the paper regresses accuracies, already in [0, 1]; nasir's objective may be any reward),
which changes no ranking. Members differ in initial weights and batch order. Training is
float32 numpy (the gates' transcendentals dominate, and run several times faster in single
precision) by Adam on one BLAS thread, so a fit is a pure function of data and seed.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 4, size=(96, 3))
>>> y = (X == 2).sum(1) + 0.1 * X[:, 0]
>>> for kind in ("lstm", "mlp"):
...     m = SequenceEnsemble(kind, vocab=4, block=3, members=2, embed=8, hidden=16,
...                          epochs=80, seed=0).fit(X, y)
...     print(kind, bool(np.corrcoef(m.predict(X)[0], y)[0, 1] > 0.9))
lstm True
mlp True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.strategies.surrogates.deep import (
    LOSSES,
    Adam,
    _t,
    check_positive_ints,
    flat_views,
    glorot,
    loss_gradient,
    one_blas_thread,
)
from nasir.strategies.surrogates.models import _check_xy

__all__ = ["SEQUENCE_MODELS", "SequenceEnsemble"]

SEQUENCE_MODELS = ("lstm", "mlp")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class SequenceEnsemble:
    """``members`` PNAS predictors of ``kind`` (``lstm`` or ``mlp``) over token rows.

    ``vocab``: number of token ids; ``head``: tokens before the blocks; ``block``: tokens
    per block; ``embed``: embedding width; ``hidden``: LSTM state width, or the width of each
    of the MLP's ``layers`` hidden layers. Trained with ``loss`` by Adam (``lr``) on batches
    of ``batch_size`` for ``epochs`` passes.
    """

    kind: str = "lstm"
    vocab: int = 1
    head: int = 0
    block: int = 1
    members: int = 5
    embed: int = 100
    hidden: int = 100
    layers: int = 2
    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.002
    loss: str = "l1"
    seed: int = 0
    _p: list[np.ndarray] = field(default_factory=list, repr=False)
    _y: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in SEQUENCE_MODELS:
            raise SpecError(f"unknown sequence predictor {self.kind!r}",
                            hint=f"use one of {', '.join(SEQUENCE_MODELS)}")
        if self.loss not in LOSSES:
            raise SpecError(f"unknown loss {self.loss!r}", hint=f"use one of {', '.join(LOSSES)}")
        check_positive_ints("SequenceEnsemble", vocab=self.vocab, block=self.block,
                            members=self.members, embed=self.embed, hidden=self.hidden,
                            layers=self.layers, epochs=self.epochs,
                            batch_size=self.batch_size)
        if isinstance(self.head, bool) or not isinstance(self.head, int) or self.head < 0:
            raise SpecError(f"SequenceEnsemble head must be an int >= 0, got {self.head!r}")

    # -- data ---------------------------------------------------------------------------
    def _tokens(self, X: np.ndarray) -> np.ndarray:
        tok = np.asarray(X)
        if tok.ndim != 2 or (tok.shape[1] - self.head) % self.block or tok.shape[1] < self.head:
            raise SpecError(f"token rows must be 2-d with {self.head} head tokens and then "
                            f"blocks of {self.block}, got shape {tok.shape}")
        tok = tok.astype(np.int64)
        if (tok >= self.vocab).any() or (tok < -1).any():
            raise SpecError(f"token ids must lie in -1..{self.vocab - 1}")
        return tok

    def _shapes(self) -> list[tuple[int, ...]]:
        e, v, d, h = self.members, self.vocab, self.embed, self.hidden
        if self.kind == "lstm":
            return [(e, v, d), (e, d, 4 * h), (e, h, 4 * h), (e, 1, 4 * h), (e, h, 1),
                    (e, 1, 1)]
        dims = [(self.head + self.block) * d] + [h] * self.layers + [1]
        out: list[tuple[int, ...]] = [(e, v, d)]
        for a, b in itertools.pairwise(dims):
            out += [(e, a, b), (e, 1, b)]
        return out

    def _init(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        flat, p = flat_views(self._shapes(), np.float32)
        p[0][...] = rng.uniform(-0.05, 0.05, p[0].shape)  # embeddings, as Keras'
        for w in p[1:]:
            if w.shape[1] > 1:
                glorot(rng, w)
        if self.kind == "lstm":
            p[3][..., self.hidden:2 * self.hidden] = 1.0  # forget-gate bias
        return flat, p

    # -- training -----------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> SequenceEnsemble:
        """Train every member from scratch on token rows ``X`` and targets ``y``."""
        with one_blas_thread():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> SequenceEnsemble:
        tok = self._tokens(X)
        _, yv = _check_xy(np.zeros((len(tok), 1)), y)
        assert yv is not None
        lo, span = float(yv.min()), float(np.ptp(yv)) or 1.0
        self._y = (lo, span)
        t = (0.1 + 0.8 * (yv - lo) / span).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        flat, p = self._init(rng)
        grad, g = flat_views(self._shapes(), np.float32)
        opt = Adam(flat, self.lr)
        n = len(tok)
        step = self._lstm_step if self.kind == "lstm" else self._mlp_step
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for s in range(0, n, self.batch_size):
                rows = order[s:s + self.batch_size]
                grad[:] = 0.0
                step(p, g, tok[rows], t[rows])
                opt.step(grad)
        self._p = [a.copy() for a in p]
        return self

    def _lstm_forward(self, p: list[np.ndarray], tok: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, ...]]]:
        E, Wx, Wh, bg, wo, bo = p
        h = self.hidden
        G = E @ Wx + bg
        hs = np.zeros((self.members, len(tok), h), np.float32)
        cs = np.zeros_like(hs)
        tape = []
        for k in range(tok.shape[1]):
            m = (tok[:, k] >= 0).astype(np.float32)[None, :, None]
            a = G[:, np.maximum(tok[:, k], 0)] + hs @ Wh
            i, f, o = (_sigmoid(a[..., j * h:(j + 1) * h]) for j in range(3))
            gg = np.tanh(a[..., 3 * h:])
            cn = f * cs + i * gg
            tc = np.tanh(cn)
            tape.append((m, np.maximum(tok[:, k], 0), hs, cs, i, f, o, gg, tc))
            hs = m * (o * tc) + (1 - m) * hs
            cs = m * cn + (1 - m) * cs
        return _sigmoid(hs @ wo + bo)[..., 0], hs, tape

    def _lstm_step(self, p: list[np.ndarray], g: list[np.ndarray], tok: np.ndarray,
                   t: np.ndarray) -> None:
        E, Wx, Wh, _, wo, _ = p
        out, hs, tape = self._lstm_forward(p, tok)
        dz = (loss_gradient(out - t[None, :], self.loss) * out * (1 - out))[..., None]
        g[4][...] = hs.transpose(0, 2, 1) @ dz
        g[5][...] = dz.sum(1, keepdims=True)
        dh = dz @ _t(wo)
        dc = np.zeros_like(dh)
        dG = np.zeros((self.members, self.vocab, 4 * self.hidden), np.float32)
        eye = np.eye(self.vocab, dtype=np.float32)
        wh_t = _t(Wh)
        for m, ids, hp, cp, i, f, o, gg, tc in reversed(tape):
            dhn = m * dh
            dcn = m * dc + dhn * o * (1 - tc * tc)
            da = np.concatenate([dcn * gg * i * (1 - i), dcn * cp * f * (1 - f),
                                 dhn * tc * o * (1 - o), dcn * i * (1 - gg * gg)], axis=-1)
            g[2] += hp.transpose(0, 2, 1) @ da
            dG += eye[ids].T @ da
            dh = da @ wh_t + (1 - m) * dh
            dc = dcn * f + (1 - m) * dc
        g[0][...] = dG @ _t(Wx)
        g[1][...] = E.transpose(0, 2, 1) @ dG
        g[3][...] = dG.sum(1, keepdims=True)

    def _mlp_input(self, E: np.ndarray, tok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per member ``(head + block)·embed`` inputs, and each row's block weights
        (1/built blocks where built)."""
        e, n, d = self.members, len(tok), self.embed
        emb = E[:, np.maximum(tok, 0)] * (tok >= 0)[None, :, :, None]
        built = (tok[:, self.head::self.block] >= 0).astype(np.float32)
        w = built / np.maximum(built.sum(1, keepdims=True), 1.0)
        blocks = emb[:, :, self.head:].reshape(e, n, built.shape[1], self.block * d)
        x = np.concatenate([emb[:, :, :self.head].reshape(e, n, self.head * d),
                            (blocks * w[None, :, :, None]).sum(2)], axis=-1)
        return x, w

    def _mlp_forward(self, p: list[np.ndarray], tok: np.ndarray
                     ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        x, w = self._mlp_input(p[0], tok)
        acts = [x]
        pairs = list(zip(p[1::2], p[2::2], strict=True))
        for k, (W, b) in enumerate(pairs):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0.0) if k < len(pairs) - 1 else _sigmoid(z))
        return acts[-1][..., 0], acts, w

    def _mlp_step(self, p: list[np.ndarray], g: list[np.ndarray], tok: np.ndarray,
                  t: np.ndarray) -> None:
        out, acts, w = self._mlp_forward(p, tok)
        d = (loss_gradient(out - t[None, :], self.loss) * out * (1 - out))[..., None]
        n_layers = (len(p) - 1) // 2
        for k in range(n_layers - 1, -1, -1):
            W = p[1 + 2 * k]
            g[1 + 2 * k][...] = acts[k].transpose(0, 2, 1) @ d
            g[2 + 2 * k][...] = d.sum(1, keepdims=True)
            d = d @ _t(W)
            if k:
                d = d * (acts[k] > 0)
        e, n, dim = self.members, len(tok), self.embed
        dhead = d[..., :self.head * dim].reshape(e, n, self.head, dim)
        dblk = (d[..., None, self.head * dim:] * w[None, :, :, None]).reshape(
            e, n, -1, dim)
        demb = np.concatenate([dhead, dblk], axis=2) * (tok >= 0)[None, :, :, None]
        onehot = np.eye(self.vocab, dtype=np.float32)[np.maximum(tok, 0)].reshape(-1, self.vocab)
        g[0][...] = onehot.T @ demb.reshape(e, -1, dim)

    # -- prediction ---------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(self._p)

    def member_predictions(self, X: np.ndarray) -> np.ndarray:
        """``(members, rows)`` predictions in target units."""
        if not self.fitted:
            raise SpecError("the ensemble is not fitted", hint="call fit(X, y) first")
        tok = self._tokens(X)
        with one_blas_thread():
            if self.kind == "lstm":
                out = self._lstm_forward(self._p, tok)[0]
            else:
                out = self._mlp_forward(self._p, tok)[0]
        lo, span = self._y
        return np.asarray((out.astype(np.float64) - 0.1) / 0.8 * span + lo)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread (population std) over the members."""
        preds = self.member_predictions(X)
        return preds.mean(0), preds.std(0)
