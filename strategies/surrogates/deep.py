"""Deep MLP ensembles trained by mini-batch Adam with an L1 or squared loss (numpy).

This is BANANAS's predictor (White et al., AAAI 2021), as naszilla's ``MetaNeuralnet`` with
its ``standard`` parameters sets it up: ``members`` fully connected ReLU networks of
``layers`` × ``hidden`` units (10 × 20) and one linear output, mean absolute error, Adam
(lr 0.01, β 0.9 / 0.99), ``epochs`` (150) passes over the data in batches of
``batch_size`` (32). Members differ in their initial weights (Glorot uniform, zero
biases, as Keras' ``Dense``) and in the order of their batches.

Like :mod:`nasir.strategies.surrogates.models` it trains in float64 numpy, so a fit is a
pure function of its data and seed (strategies that refit stay replayable). The members
train together on a leading member axis, and the optimiser steps one flat parameter vector
(:class:`Adam`), which keeps the Python overhead per step to a few dozen array operations.
Fits and predictions run with one BLAS thread (:func:`one_blas_thread`): at these sizes
(tens of rows) a threaded BLAS only waits on its threads, by orders of magnitude on a busy
machine.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 2, size=(64, 6)).astype(float)
>>> y = X @ np.arange(6.0) + 1.0
>>> m = DeepEnsemble(members=3, layers=3, hidden=16, epochs=60, seed=0).fit(X, y)
>>> bool(np.corrcoef(m.predict(X)[0], y)[0, 1] > 0.95)
True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.strategies.surrogates.models import _check_xy, transform_targets

__all__ = ["LOSSES", "Adam", "DeepEnsemble", "loss_gradient", "one_blas_thread"]

#: training losses of the neural predictors: ``l1`` (mean absolute error, BANANAS' and
#: PNAS's) and ``l2`` (mean squared error)
LOSSES = ("l1", "l2")


def loss_gradient(err: np.ndarray, kind: str) -> np.ndarray:
    """d(mean loss)/d(prediction) for ``err = prediction − target`` (mean over the last
    axis, the batch).

    >>> loss_gradient(np.array([[-2.0, 0.5]]), "l1").tolist()
    [[-0.5, 0.5]]
    """
    n = err.shape[-1]
    if kind == "l1":
        return np.sign(err) / n
    if kind == "l2":
        return 2.0 * err / n
    raise SpecError(f"unknown loss {kind!r}", hint=f"use one of {', '.join(LOSSES)}")


def check_positive_ints(owner: str, **values: object) -> None:
    """``SpecError`` unless every value is an int >= 1 (bools refused)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError(f"{owner} {name} must be an int >= 1, got {v!r}")


def one_blas_thread() -> Any:
    """A context manager limiting BLAS to one thread (threadpoolctl, which scikit-learn,
    a nasir dependency, requires)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class Adam:
    """Adam on one flat parameter vector (the arrays a model trains are views into
    it, so one step updates all of them).

    >>> p = np.array([1.0, -1.0])
    >>> opt = Adam(p, lr=0.1)
    >>> opt.step(np.array([1.0, -1.0])); p.round(3).tolist()
    [0.9, -0.9]
    """

    def __init__(self, params: np.ndarray, lr: float, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-7) -> None:
        self.p, self.lr, self.b1, self.b2, self.eps = params, lr, beta1, beta2, eps
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0

    def step(self, grad: np.ndarray) -> None:
        """One update with ``grad`` (same shape as the parameters)."""
        self.t += 1
        self.m *= self.b1
        self.m += (1 - self.b1) * grad
        self.v *= self.b2
        self.v += (1 - self.b2) * grad * grad
        lr = float(self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t))
        self.p -= lr * self.m / (np.sqrt(self.v) + self.eps)


def _t(a: np.ndarray) -> np.ndarray:
    """The last two axes swapped, contiguous (numpy's stacked matmul takes a slow loop,
    not BLAS, for a transposed second operand)."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def flat_views(shapes: Sequence[tuple[int, ...]], dtype: type = np.float64
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A zero vector and views of it with ``shapes`` (in order)."""
    sizes = [int(np.prod(s)) for s in shapes]
    flat: np.ndarray = np.zeros(sum(sizes), dtype)
    views, at = [], 0
    for s, k in zip(shapes, sizes, strict=True):
        views.append(flat[at:at + k].reshape(s))
        at += k
    return flat, views


def glorot(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill ``out`` (members × fan-in × fan-out) from Glorot's uniform distribution."""
    fan_in, fan_out = out.shape[-2], out.shape[-1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    out[...] = rng.uniform(-limit, limit, out.shape)


@dataclass
class DeepEnsemble:
    """``members`` ReLU MLPs of ``layers`` hidden layers × ``hidden`` units, trained with
    ``loss`` (``l1`` or ``l2``) by Adam on batches of ``batch_size`` for ``epochs`` passes;
    ``target`` picks the target scale (``raw`` or ``rank``, as
    :func:`~nasir.strategies.surrogates.models.transform_targets`), standardised before
    training (the loss's minimiser does not change). ``predict`` gives the members' mean
    and population std."""

    members: int = 5
    layers: int = 10
    hidden: int = 20
    epochs: int = 150
    batch_size: int = 32
    lr: float = 0.01
    loss: str = "l1"
    target: str = "raw"
    seed: int = 0
    _w: list[np.ndarray] = field(default_factory=list, repr=False)
    _b: list[np.ndarray] = field(default_factory=list, repr=False)
    _y: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_positive_ints("DeepEnsemble", members=self.members, layers=self.layers,
                            hidden=self.hidden, epochs=self.epochs,
                            batch_size=self.batch_size)
        if self.loss not in LOSSES:
            raise SpecError(f"unknown loss {self.loss!r}", hint=f"use one of {', '.join(LOSSES)}")

    def fit(self, X: np.ndarray, y: np.ndarray) -> DeepEnsemble:
        """Train every member from scratch on ``X`` (rows × features) and ``y``."""
        with one_blas_thread():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> DeepEnsemble:
        X, yv = _check_xy(X, y)
        assert yv is not None
        yv = transform_targets(yv, self.target)
        mu, sd = float(yv.mean()), float(yv.std()) or 1.0
        t = (yv - mu) / sd
        self._y = (mu, sd)
        rng = np.random.default_rng(self.seed)
        e, (n, f) = self.members, X.shape
        dims = [f] + [self.hidden] * self.layers + [1]
        shapes = [(e, a, b) for a, b in itertools.pairwise(dims)]
        flat, views = flat_views(shapes + [(e, 1, b) for b in dims[1:]])
        ws, bs = views[:len(shapes)], views[len(shapes):]
        for w in ws:
            glorot(rng, w)
        grad, gviews = flat_views(shapes + [(e, 1, b) for b in dims[1:]])
        gws, gbs = gviews[:len(shapes)], gviews[len(shapes):]
        opt = Adam(flat, self.lr, 0.9, 0.99)
        for _ in range(self.epochs):
            order = np.argsort(rng.random((e, n)), axis=1)
            for s in range(0, n, self.batch_size):
                rows = order[:, s:s + self.batch_size]
                acts = [X[rows]]
                for k, (w, b) in enumerate(zip(ws, bs, strict=True)):
                    z = acts[-1] @ w + b
                    acts.append(np.maximum(z, 0.0) if k < len(ws) - 1 else z)
                g = loss_gradient(acts[-1][..., 0] - t[rows], self.loss)[..., None]
                for k in range(len(ws) - 1, -1, -1):
                    np.matmul(acts[k].transpose(0, 2, 1), g, out=gws[k])
                    gbs[k][...] = g.sum(1, keepdims=True)
                    if k:
                        g = (g @ _t(ws[k])) * (acts[k] > 0)
                opt.step(grad)
        self._w = [w.copy() for w in ws]
        self._b = [b.copy() for b in bs]
        return self

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(self._w)

    def member_predictions(self, X: np.ndarray) -> np.ndarray:
        """``(members, rows)`` predictions in target units."""
        if not self.fitted:
            raise SpecError("the ensemble is not fitted", hint="call fit(X, y) first")
        X, _ = _check_xy(X)
        a = np.broadcast_to(X, (self.members, *X.shape))
        with one_blas_thread():
            for k, (w, b) in enumerate(zip(self._w, self._b, strict=True)):
                a = a @ w + b
                if k < len(self._w) - 1:
                    a = np.maximum(a, 0.0)
        mu, sd = self._y
        return np.asarray(a[..., 0] * sd + mu)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread (population std) over the members."""
        preds = self.member_predictions(X)
        return preds.mean(0), preds.std(0)
