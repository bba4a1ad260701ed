"""BANANAS (White, Neiswanger & Savani, AAAI 2021): an ensemble of neural predictors,
independent Thompson sampling, and the path encoding.

After ``init`` uniform samples, every refill fits the surrogate on all results, builds a
candidate set, scores it and queues the ``batch`` best candidates by the acquisition
function. Two profiles set the defaults (:data:`PROFILES`; explicit options win):

* ``paper`` (the default), the official code's settings (naszilla/naszilla
  ``nas_algorithms.bananas``, ``nas_benchmarks.get_candidates``,
  ``params.meta_neuralnet_params("standard")``): 10 initial samples, then 10 queries per
  iteration; features from the **path encoding** of the encodings pass
  (:func:`nasir.passes.encodings.encode`); an ensemble of 5 MLPs of 10 layers × 20 units
  trained with an L1 loss (Adam lr 0.01, 150 epochs, batches of 32,
  :class:`~nasir.strategies.surrogates.deep.DeepEnsemble`); **independent Thompson
  sampling** (one draw from N(mean, spread²) per candidate); candidates are 100 random
  mutations of the best architecture (each decision changed with probability
  ``mutation_rate / (decisions − 2)``, NB201's 1/4), continuing with the next best (up to
  5) until 100 new ones are found. On a space without a cell view there is no path
  encoding: the one-hot encoding is used and :attr:`Bananas.settings` says so.
* ``nasir``: nasir's earlier BANANAS-style search, chosen on NB201 seeds 1000–1059 at 150
  queries: one-hot features scored by the fused numba kernel, an ensemble of 5 one-layer
  MLPs (32 units, squared loss on rank targets), UCB (``beta`` 1), and as candidates every
  one-step mutation (the shared :func:`~nasir.passes.mutation.neighbours` pass) of the 10
  best, every two-step mutation of the 3 best and 2000 uniform samples, 5 queries per fit.

On the NB201 table (150 queries, seeds 0–99; ``benchmarks/paper_defaults.py``,
notes/issue-21-paper-defaults.log) the paper default's mean regret is 0.067 against 0.043
for ``profile="nasir"``. The candidate set accounts for it: the paper's predictor, path
encoding and ITS over nasir's candidates (``acq_opt="neighbourhood"``) score 0.045, since
100 mutants of the best keep the search near one local optimum.

Candidates breaking ``bounds`` (MACs, LUT latency, from the numba tables) are dropped before
anything is evaluated; none is proposed twice (canonical hash). Every setting used, its
source and the known deviations from the official code are in :attr:`Bananas.settings` and
``state()["settings"]``.

>>> from nasir.spaces import get_space
>>> s = Bananas(get_space("nb201"), seed=0, init=4, batch=2, epochs=20)
>>> for k, a in enumerate(s.propose(4)):
...     s.feedback(a, {"accuracy": 0.5 + k / 10})
>>> s.propose(1)[0].provenance["source"], s.settings["encoding"], s.settings["acquisition"]
('acquisition', 'path', 'its')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from nasir.errors import SpecError
from nasir.passes.encodings import encode
from nasir.passes.mutation import neighbours
from nasir.passes.sampling import UniformSampler
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.dedup import SeenArchitectures, SpaceExhausted
from nasir.strategies.surrogates.data import bounded_scorer, sizes_of, training_set
from nasir.strategies.surrogates.deep import LOSSES, DeepEnsemble
from nasir.strategies.surrogates.kernel import Scores
from nasir.strategies.surrogates.models import MLPEnsemble, Ridge
from nasir.strategies.surrogates.tables import TermTable

__all__ = ["ACQUISITIONS", "ACQ_OPTS", "PAPER", "PROFILES", "Bananas", "acquire"]

ACQUISITIONS = ("its", "ucb", "mean")

#: how candidates are made: ``mutation`` (the paper's random mutations of the best) or
#: ``neighbourhood`` (nasir's one/two-step neighbourhoods of the best plus uniform samples)
ACQ_OPTS = ("mutation", "neighbourhood")

_SURROGATES = ("deep", "mlp", "ridge")
_ENCODINGS = ("path", "onehot", "adjacency")

#: option defaults per profile (explicit options win)
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"init": 10, "batch": 10, "encoding": "path", "acquisition": "its",
              "acq_opt": "mutation", "candidates": 100, "mutate_top": 1, "mutation_rate": 1.0,
              "parents": 10, "deep": 3, "pool": 2000, "beta": 0.5, "surrogate": "deep",
              "members": 5, "layers": 10, "hidden": 20, "epochs": 150, "batch_size": 32,
              "lr": 0.01, "loss": "l1", "target": "raw"},
    "nasir": {"init": 10, "batch": 5, "encoding": "onehot", "acquisition": "ucb",
              "acq_opt": "neighbourhood", "candidates": 100, "mutate_top": 1,
              "mutation_rate": 1.0, "parents": 10, "deep": 3, "pool": 2000, "beta": 1.0,
              "surrogate": "mlp", "members": 5, "layers": 1, "hidden": 32, "epochs": 200,
              "batch_size": 32, "lr": 0.01, "loss": "l2", "target": "rank"},
}

#: sources of the paper profile and where nasir differs from the official code
PAPER: dict[str, Any] = {
    "paper": "White, Neiswanger & Savani, BANANAS, AAAI 2021",
    "code": "naszilla/naszilla: nas_algorithms.bananas (num_init 10, k 10, num_ensemble 5, "
            "explore_type its, acq_opt_type mutation, num_arches_to_mutate 1, "
            "max_mutation_rate 1); nas_benchmarks.get_candidates (num 100, patience_factor "
            "5); params.meta_neuralnet_params('standard') (loss mae, 10 layers x 20, 150 "
            "epochs, batch 32, lr 0.01); nas_bench_201/cell_201.mutate (p = rate / (6 - 2))",
    "deviations": [
        "full path encoding (the paper's); naszilla's NB201 default truncates it to the "
        "first 30 paths (trunc_path)",
        "targets standardised before training (Keras fits raw validation error; the L1 "
        "minimiser is the same) and accuracy maximised instead of error minimised",
        "duplicates found by nasir's canonical hash (naszilla's NB201 hash is the cell "
        "string, so isomorphic cells count as new)",
        "mutation acts on option indices of every decision, inactive ones included (a "
        "change there repeats the architecture and is dropped as a duplicate)",
    ],
}

#: parents tried in turn until ``candidates`` new mutants exist (naszilla's patience_factor)
_PATIENCE = 5


def acquire(scores: Scores, kind: str, rng: np.random.Generator, beta: float = 1.0,
            use_ridge: bool = False) -> np.ndarray:
    """Acquisition values (higher is better) for scored candidates.

    >>> import numpy as np
    >>> z = np.zeros(2)
    >>> sc = Scores(np.array([1.0, 2.0]), np.array([3.0, 0.0]), z, z, z)
    >>> acquire(sc, "ucb", np.random.default_rng(0), beta=1.0).tolist()
    [4.0, 2.0]
    """
    mean = scores.ridge if use_ridge else scores.mean.astype(np.float64)
    std = np.zeros_like(mean) if use_ridge else scores.std.astype(np.float64)
    if kind == "its":
        return mean + std * rng.standard_normal(len(mean))
    if kind == "ucb":
        return mean + beta * std
    if kind == "mean":
        return mean
    raise SpecError(f"unknown acquisition {kind!r}", hint=f"use one of {', '.join(ACQUISITIONS)}")


class Bananas(Strategy):
    """Ensemble surrogate + acquisition over mutations of the best architectures.

    ``profile``: ``"paper"`` or ``"nasir"`` (:data:`PROFILES`). Options: ``init`` uniform
    samples first; ``batch`` queries per fit; ``encoding`` (``path``, ``onehot``,
    ``adjacency``); ``acquisition`` (``its``, ``ucb`` with ``beta``, ``mean``);
    ``acq_opt`` (``mutation``: ``candidates`` mutants of the ``mutate_top`` best at
    ``mutation_rate``; ``neighbourhood``: one-step neighbours of the ``parents`` best,
    two-step of the ``deep`` best, ``pool`` uniform samples); ``surrogate`` (``deep``:
    ``members`` × ``layers`` × ``hidden`` with ``loss``, ``epochs``, ``batch_size``,
    ``lr``; ``mlp``: one hidden layer; ``ridge``) and ``target`` (``raw`` or ``rank``).
    """

    name: ClassVar[str] = "bananas"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 profile: str = "paper", init: int | None = None, batch: int | None = None,
                 encoding: str | None = None, acquisition: str | None = None,
                 acq_opt: str | None = None, candidates: int | None = None,
                 mutate_top: int | None = None, mutation_rate: float | None = None,
                 parents: int | None = None, deep: int | None = None,
                 pool: int | None = None, beta: float | None = None,
                 surrogate: str | None = None, members: int | None = None,
                 layers: int | None = None, hidden: int | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, loss: str | None = None, target: str | None = None,
                 bounds: Mapping[str, float] | None = None,
                 latency: TermTable | None = None) -> None:
        super().__init__(space, seed, objective)
        if profile not in PROFILES:
            raise SpecError(f"unknown bananas profile {profile!r}",
                            hint=f"use one of {', '.join(PROFILES)}")
        given = {"init": init, "batch": batch, "encoding": encoding,
                 "acquisition": acquisition, "acq_opt": acq_opt, "candidates": candidates,
                 "mutate_top": mutate_top, "mutation_rate": mutation_rate, "parents": parents,
                 "deep": deep, "pool": pool, "beta": beta, "surrogate": surrogate,
                 "members": members, "layers": layers, "hidden": hidden, "epochs": epochs,
                 "batch_size": batch_size, "lr": lr, "loss": loss, "target": target}
        o = {**PROFILES[profile], **{k: v for k, v in given.items() if v is not None}}
        _check(o)
        deviations = list(PAPER["deviations"]) if profile == "paper" else []
        if not _has_encoding(space, str(o["encoding"])):
            if encoding is not None:
                raise SpecError(f"{space.name} has no {encoding} encoding (it needs a cell "
                                "space)", hint="use encoding='onehot'")
            deviations.append(f"{space.name} has no cell view, so no {o['encoding']} "
                              "encoding: one-hot features instead")
            o["encoding"] = "onehot"
        self.init, self.batch, self.parents = int(o["init"]), int(o["batch"]), int(o["parents"])
        self.pool, self.deep = max(0, int(o["pool"])), max(0, int(o["deep"]))
        self.acquisition, self.beta = str(o["acquisition"]), float(o["beta"])
        self.surrogate, self.encoding = str(o["surrogate"]), str(o["encoding"])
        self.mutation_prob = min(1.0, float(o["mutation_rate"]) / max(1, len(space.decisions) - 2))
        self.options = o
        # the numba kernel scores one-hot features of the one-layer MLP and ridge in bulk
        self._kernel = self.encoding == "onehot" and self.surrogate in ("mlp", "ridge")
        self.model_options = {"members": o["members"], "hidden": o["hidden"],
                              "epochs": o["epochs"], "target": o["target"]}
        self.bounds = {**{c.metric: c.max for c in space.constraints}, **dict(bounds or {})}
        self.latency = latency
        self.settings: dict[str, Any] = {
            "profile": profile, **o, "mutation_prob": self.mutation_prob,
            "bounds": dict(self.bounds), "deviations": deviations,
            **({"source": {k: PAPER[k] for k in ("paper", "code")}}
               if profile == "paper" else {})}
        self.seen = SeenArchitectures(space)
        self.sampler = UniformSampler(space)
        self.sizes = sizes_of(space)
        self.queue: list[Assignment] = []
        self.fits = 0
        self._codes: dict[tuple[int, ...], np.ndarray] = {}
        # tables only: fails early on a bound the space cannot evaluate
        self._filter = bounded_scorer(space, self.bounds, latency)

    def state(self) -> dict[str, Any]:
        """The base state plus ``settings`` (profile, every option, sources, deviations)."""
        return {**super().state(), "settings": dict(self.settings)}

    # -- contract -----------------------------------------------------------------------
    def _propose(self, n: int) -> list[Assignment]:
        out: list[Assignment] = []
        while len(out) < n:
            if not self.queue:
                self._refill()
            out.append(self.queue.pop(0))
        return out

    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        self.seen.record(a, self.score(metrics))

    # -- internals ----------------------------------------------------------------------
    def _feasible(self, scores: Scores) -> np.ndarray:
        ok = np.ones(len(scores.mean), dtype=bool)
        if "macs" in self.bounds:
            ok &= scores.macs <= self.bounds["macs"]
        if "latency_ms" in self.bounds:
            ok &= scores.latency_ms <= self.bounds["latency_ms"]
        return ok

    def _enqueue(self, rows: np.ndarray, order: np.ndarray, source: str, limit: int) -> None:
        for k in order:
            a = self.space.from_indices(rows[k], {"source": source})
            if self.seen.add(a):
                self.queue.append(a)
                if len(self.queue) >= limit:
                    return

    def _random_rows(self, n: int) -> np.ndarray:
        return self.sampler.sample_indices(self.rng, n)

    def _refill(self) -> None:
        scored = [(a, self.score(m)) for a, m in self.results]
        idx, y = training_set(self.space, scored)
        if len(y) < self.init or len(np.unique(y)) < 2:
            rows = self._random_rows(max(64, self.pool))
            ok = np.flatnonzero(self._feasible(self._filter.score(rows)))
            self._enqueue(rows, ok, "uniform", 1)
        else:
            self.fits += 1
            if self._kernel:
                model: MLPEnsemble | Ridge | DeepEnsemble
                if self.surrogate == "mlp":
                    model = MLPEnsemble(seed=int(self.rng.integers(2**31)), **self.model_options)
                else:
                    model = Ridge(target=str(self.model_options["target"]))
                scorer = bounded_scorer(self.space, self.bounds, self.latency, idx, y, model)
                rows = self._candidates(idx, y)
                scores = scorer.score(rows)
            else:
                model = self._model()
                rows = self._candidates(idx, y)
                mean, std = model.fit(self._encode(idx), y).predict(self._encode(rows))
                scores = replace(self._filter.score(rows), mean=mean, std=std)
            self._select(scores, rows)
        if not self.queue:
            self._fallback()

    def _model(self) -> MLPEnsemble | Ridge | DeepEnsemble:
        o = self.options
        if self.surrogate == "ridge":
            return Ridge(target=str(o["target"]))
        seed = int(self.rng.integers(2**31))
        if self.surrogate == "mlp":
            return MLPEnsemble(seed=seed, **self.model_options)
        return DeepEnsemble(members=o["members"], layers=o["layers"], hidden=o["hidden"],
                            epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"],
                            loss=o["loss"], target=o["target"], seed=seed)

    def _encode(self, rows: np.ndarray) -> np.ndarray:
        """Features of index rows by the encodings pass (memoised per row)."""
        keys = [tuple(int(v) for v in r) for r in rows]
        new = list(dict.fromkeys(k for k in keys if k not in self._codes))
        if new:
            X = encode(self.space, [self.space.from_indices(k) for k in new], self.encoding)
            self._codes.update(zip(new, X.astype(np.float64), strict=True))
        if not keys:
            return np.zeros((0, 0))
        return np.stack([self._codes[k] for k in keys])

    def _candidates(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.options["acq_opt"] == "mutation":
            return self._mutants(idx, y)
        return self._pool(idx, y)

    def _mutants(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Up to ``candidates`` new architectures: random mutations of the ``mutate_top``
        best, then of the next best (``_PATIENCE`` × as many parents in all), as naszilla's
        ``get_candidates``; not proposed before, no two alike."""
        want, top = int(self.options["candidates"]), int(self.options["mutate_top"])
        per_parent = max(1, want // top)
        change = self.sizes > 1
        out: list[np.ndarray] = []
        keys: set[str] = set()
        for k in np.argsort(-y, kind="stable")[: top * _PATIENCE]:
            if len(out) >= want:
                break
            draws = np.repeat(idx[k][None, :], per_parent, axis=0)
            hit = (self.rng.random(draws.shape) < self.mutation_prob) & change
            step = self.rng.integers(1, np.maximum(self.sizes, 2), size=draws.shape)
            draws = np.where(hit, (draws + step) % self.sizes, draws)
            for r in draws:
                a = self.space.from_indices(r)
                key = self.seen.key(a)
                if key not in keys and a not in self.seen:
                    keys.add(key)
                    out.append(r)
        return np.array(out, dtype=np.int64).reshape(len(out), len(self.sizes))

    def _pool(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        top = np.argsort(-y, kind="stable")[: self.parents]
        parts = [self._random_rows(self.pool)] if self.pool else []
        for rank, k in enumerate(top):
            kids = neighbours(self.space, self.space.from_indices(idx[k]), check=False)
            if kids:
                one = np.array([self.space.indices(c) for c in kids], dtype=np.int64)
                parts.append(one)
                if rank < self.deep:
                    parts.append(self._one_step(one))
        rows = np.concatenate(parts) if parts else self._random_rows(1)
        return np.unique(rows, axis=0)

    def _one_step(self, rows: np.ndarray) -> np.ndarray:
        """Every single-decision change of every row, as index rows (two-step
        neighbourhoods are scored in bulk and never become assignments unless chosen;
        a change to a decision a row leaves inactive repeats its architecture, which the
        hash check at selection drops)."""
        out = []
        for d, size in enumerate(self.sizes.tolist()):
            for step in range(1, size):
                r = rows.copy()
                r[:, d] = (r[:, d] + step) % size
                out.append(r)
        return np.concatenate(out) if out else rows

    def _select(self, scores: Scores, rows: np.ndarray) -> None:
        value = acquire(scores, self.acquisition, self.rng, self.beta,
                        use_ridge=self._kernel and self.surrogate == "ridge")
        value[~self._feasible(scores)] = -np.inf
        order = np.argsort(-value, kind="stable")
        order = order[np.isfinite(value[order])]
        self._enqueue(rows, order, "acquisition", self.batch)

    def _fallback(self) -> None:
        for _ in range(50):
            rows = self._random_rows(256)
            ok = np.flatnonzero(self._feasible(self._filter.score(rows)))
            self._enqueue(rows, ok, "uniform", 1)
            if self.queue:
                return
        raise SpaceExhausted(f"no new architecture of {self.space.name} meeting "
                             f"{self.bounds or 'no bounds'} found",
                             hint="the space looks used up, or the bounds are too tight")


def _has_encoding(space: Space, kind: str) -> bool:
    """Whether the encodings pass can encode ``space`` as ``kind`` (path and adjacency
    need a cell view)."""
    if kind == "onehot":
        return True
    row = UniformSampler(space).sample_indices(np.random.default_rng(0), 1)[0]
    try:
        encode(space, [space.from_indices(row)], kind)
    except SpecError:
        return False
    return True


def _check(o: Mapping[str, Any]) -> None:
    """``SpecError`` for a bad option value."""
    for key, allowed in (("acquisition", ACQUISITIONS), ("acq_opt", ACQ_OPTS),
                         ("surrogate", _SURROGATES), ("encoding", _ENCODINGS),
                         ("loss", LOSSES)):
        if o[key] not in allowed:
            raise SpecError(f"unknown bananas {key} {o[key]!r}",
                            hint=f"use one of {', '.join(allowed)}")
    for key in ("init", "batch", "parents", "candidates", "mutate_top", "members", "layers",
                "hidden", "epochs", "batch_size"):
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError(f"bananas option {key} must be an int >= 1, got {v!r}")
    if not isinstance(o["mutation_rate"], int | float) or o["mutation_rate"] <= 0:
        raise SpecError(f"bananas mutation_rate must be > 0, got {o['mutation_rate']!r}")
