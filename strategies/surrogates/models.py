"""Surrogate models that learn accuracy from finished trials: an MLP ensemble and ridge.

Both train in numpy (float64, full batch) so a fit is a pure function of its data and
seed: no thread-count or BLAS-order nondeterminism of the kind torch training has, which
keeps strategies that refit during search replayable from their history.

Both take a feature matrix (any encoding of :mod:`nasir.passes.encodings`) and give
``(mean, std)``; the ensemble's std is the spread of its members (population std), the
ridge model's is zero. :meth:`MLPEnsemble.weights` exports float32 arrays for the numba
scorer in :mod:`nasir.strategies.surrogates.kernel`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 2, size=(64, 6)).astype(float)
>>> y = X @ np.arange(6.0) + 1.0
>>> m = MLPEnsemble(members=3, hidden=16, epochs=300, seed=0).fit(X, y)
>>> bool(np.corrcoef(m.predict(X)[0], y)[0, 1] > 0.95)
True
>>> r = Ridge(alpha=1e-6).fit(X, y)
>>> bool(np.allclose(r.predict(X)[0], y, atol=1e-3))
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasir.errors import SpecError

__all__ = ["SURROGATES", "TARGETS", "MLPEnsemble", "MLPWeights", "Ridge", "make_surrogate",
           "transform_targets"]


TARGETS = ("raw", "rank")


def transform_targets(y: np.ndarray, kind: str = "raw") -> np.ndarray:
    """Targets as trained on: ``raw``, or ``rank`` — normal scores of the ranks (ties
    averaged), which keeps a few collapsed architectures (NB201's 10 % cells) from
    dominating a squared loss; predictions are then on that monotone scale.

    >>> transform_targets(np.array([10.0, 90.0, 91.0]), "rank").round(3).tolist()
    [-0.967, 0.0, 0.967]
    """
    if kind == "raw":
        return np.asarray(y, dtype=np.float64)
    if kind == "rank":
        from scipy.special import ndtri
        from scipy.stats import rankdata

        y = np.asarray(y, dtype=np.float64)
        return np.asarray(ndtri((rankdata(y) - 0.5) / len(y)), dtype=np.float64)
    raise SpecError(f"unknown surrogate target {kind!r}", hint=f"use one of {', '.join(TARGETS)}")


def _check_xy(X: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise SpecError(f"surrogate features must be a 2-d array, got shape {X.shape}",
                        hint="encode assignments with nasir.passes.encodings.encode")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(X):
        raise SpecError(f"surrogate got {len(X)} feature rows but {len(y)} targets")
    if len(y) < 2:
        raise SpecError(f"a surrogate needs at least 2 training points, got {len(y)}",
                        hint="evaluate a few random architectures first")
    if not np.isfinite(y).all():
        raise SpecError("surrogate targets must be finite",
                        hint="drop failed trials or give them a finite worst score")
    return X, y


@dataclass(frozen=True)
class MLPWeights:
    """Float32 weights of a fitted ensemble, de-normalised into the last layer.

    ``w1``: ``(features, members*hidden)``, member ``e`` owning columns
    ``e*hidden:(e+1)*hidden``; ``b1``: ``(members*hidden,)``; ``w2``: ``(members*hidden,)``;
    ``b2``: ``(members,)``. Member ``e`` predicts
    ``b2[e] + relu(x @ w1[:, cols] + b1[cols]) @ w2[cols]``.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    members: int
    hidden: int


@dataclass
class MLPEnsemble:
    """``members`` one-hidden-layer ReLU MLPs with different initialisations, each trained
    with Adam on the standardised targets (full batch, ``epochs`` steps, L2 ``decay``);
    ``target`` picks the target scale (:func:`transform_targets`).

    Members see bootstrap resamples of the data when ``bootstrap`` (more spread, which
    acquisition functions read as uncertainty).
    """

    members: int = 5
    hidden: int = 32
    epochs: int = 300
    lr: float = 0.01
    decay: float = 1e-4
    bootstrap: bool = False
    target: str = "raw"
    seed: int = 0
    _params: list[tuple[np.ndarray, ...]] = field(default_factory=list, repr=False)
    _y: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("members", "hidden", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"MLPEnsemble {name} must be an int >= 1, got {v!r}")

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        """Train every member from scratch on ``X`` (rows × features) and ``y``.

        The members train together as one batched problem (a leading member axis), which
        is the same arithmetic as training them one by one with less Python overhead.
        """
        X, yv = _check_xy(X, y)
        assert yv is not None
        yv = transform_targets(yv, self.target)
        mu, sd = float(yv.mean()), float(yv.std()) or 1.0
        t = (yv - mu) / sd
        self._y = (mu, sd)
        rng = np.random.default_rng(self.seed)
        n, f = X.shape
        e, h = self.members, self.hidden
        if self.bootstrap:
            weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                                for _ in range(e)]).astype(np.float64)
        else:
            weights = np.ones((e, n))
        weights /= weights.sum(1, keepdims=True)
        p = [rng.normal(0.0, np.sqrt(2.0 / max(f, 1)), (e, f, h)), np.zeros((e, 1, h)),
             rng.normal(0.0, np.sqrt(1.0 / h), (e, h, 1)), np.zeros((e, 1, 1))]
        m = [np.zeros_like(a) for a in p]
        v = [np.zeros_like(a) for a in p]
        b1, b2, eps = 0.9, 0.999, 1e-8
        wt = weights[:, :, None]
        for step in range(1, self.epochs + 1):
            z = X @ p[0] + p[1]
            a = np.maximum(z, 0.0)
            err = a @ p[2] + p[3] - t[None, :, None]
            g_out = 2.0 * err * wt
            g_z = (g_out @ p[2].transpose(0, 2, 1)) * (z > 0)
            grads = [X.T @ g_z + self.decay * p[0], g_z.sum(1, keepdims=True),
                     a.transpose(0, 2, 1) @ g_out + self.decay * p[2],
                     g_out.sum(1, keepdims=True)]
            c1, c2 = 1 - b1 ** step, 1 - b2 ** step
            for k in range(4):
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
                p[k] = p[k] - self.lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
        self._params = [(p[0][i], p[1][i, 0], p[2][i, :, 0], p[3][i, 0]) for i in range(e)]
        return self

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(self._params)

    def member_predictions(self, X: np.ndarray) -> np.ndarray:
        """``(members, rows)`` predictions in target units."""
        if not self.fitted:
            raise SpecError("the ensemble is not fitted", hint="call fit(X, y) first")
        X, _ = _check_xy(X)
        mu, sd = self._y
        return np.stack([(np.maximum(X @ w1 + c1, 0.0) @ w2 + c2[0]) * sd + mu
                         for w1, c1, w2, c2 in self._params])

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread (population std) over the members."""
        preds = self.member_predictions(X)
        return preds.mean(0), preds.std(0)

    def weights(self) -> MLPWeights:
        """The fitted weights as float32 arrays for the numba kernel (see :class:`MLPWeights`)."""
        if not self.fitted:
            raise SpecError("the ensemble is not fitted", hint="call fit(X, y) first")
        mu, sd = self._y
        w1 = np.concatenate([p[0] for p in self._params], axis=1)
        b1 = np.concatenate([p[1] for p in self._params])
        w2 = np.concatenate([p[2] * sd for p in self._params])
        b2 = np.array([p[3][0] * sd + mu for p in self._params])
        return MLPWeights(np.ascontiguousarray(w1, np.float32), b1.astype(np.float32),
                          w2.astype(np.float32), b2.astype(np.float32),
                          self.members, self.hidden)


@dataclass
class Ridge:
    """Ridge regression (closed form, intercept not penalised): the gradient-free baseline."""

    alpha: float = 1.0
    target: str = "raw"
    coef: np.ndarray | None = field(default=None, repr=False)
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, int | float) or self.alpha < 0:
            raise SpecError(f"Ridge alpha must be a number >= 0, got {self.alpha!r}")

    def fit(self, X: np.ndarray, y: np.ndarray) -> Ridge:
        """Solve ``(Xcᵀ Xc + α I) w = Xcᵀ yc`` on centred data."""
        X, yv = _check_xy(X, y)
        assert yv is not None
        yv = transform_targets(yv, self.target)
        xm, ym = X.mean(0), yv.mean()
        Xc = X - xm
        a = Xc.T @ Xc + max(self.alpha, 1e-12) * np.eye(X.shape[1])
        self.coef = np.linalg.solve(a, Xc.T @ (yv - ym))
        self.intercept = float(ym - xm @ self.coef)
        return self

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.coef is not None

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and a zero spread."""
        if self.coef is None:
            raise SpecError("the ridge model is not fitted", hint="call fit(X, y) first")
        X, _ = _check_xy(X)
        out = X @ self.coef + self.intercept
        return out, np.zeros_like(out)


#: name → class, for options such as ``surrogate="ridge"``
SURROGATES = {"mlp": MLPEnsemble, "ridge": Ridge}


def make_surrogate(name: str, seed: int = 0, **options: Any) -> MLPEnsemble | Ridge:
    """Build a surrogate by name (``mlp`` or ``ridge``) with the model's public fields as
    ``options`` (values as a config gives them: ``Any``; an unknown name is a SpecError).

    >>> make_surrogate("ridge", alpha=0.5).alpha
    0.5
    """
    if name not in SURROGATES:
        raise SpecError(f"unknown surrogate {name!r}", hint=f"use one of {', '.join(SURROGATES)}")
    cls = SURROGATES[name]
    known = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    known -= {"seed", "coef", "intercept"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SpecError(f"surrogate {name!r} has no option(s) {', '.join(unknown)}",
                        hint=f"{name} takes: {', '.join(sorted(known))}")
    if name == "mlp":
        return MLPEnsemble(seed=seed, **options)
    return Ridge(**options)
