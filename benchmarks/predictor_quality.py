"""Predictor quality: Kendall τ on held-out NB201 cells after 50, 100 and 200 training points.

For each training size and each of ``--repeats`` seeds: draw that many distinct cells of
the NB201 table (CIFAR-10 test accuracy), fit the predictor, predict every other cell of
the table (the held-out set, ~15,400 cells) and take Kendall τ against the table. The
predictors are the ones the strategies use — the MLP ensemble (5×32) and ridge over the
one-hot encoding, predictions by the numba scorer — with raw targets and with the rank
transform the strategies train on (``target="rank"``); the ensemble over the path encoding
(BANANAS's, via :func:`nasir.passes.encodings.encode`) is a reference row.

Run: ``.venv/bin/python benchmarks/predictor_quality.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import kendalltau

from nasir.bench.nb201_table import NB201Table
from nasir.passes.encodings import encode
from nasir.spaces import get_space
from nasir.strategies.surrogates import MLPEnsemble, Ridge, Scorer, onehot
from nasir.strategies.surrogates.data import sizes_of

SIZES = (50, 100, 200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-path", action="store_true", help="skip the path-encoding row")
    args = ap.parse_args()

    space = get_space("nb201")
    table = NB201Table.load()
    sizes = sizes_of(space)
    idx = np.array(list(np.ndindex(*sizes)), dtype=np.int64)
    y = np.array([table.peek(space.from_indices(r)) for r in idx])
    X = onehot(idx, sizes)
    path = None
    if not args.no_path:
        t = time.perf_counter()
        path = encode(space, [space.from_indices(r) for r in idx], "path")
        print(f"path encoding of {len(idx)} cells: {time.perf_counter() - t:.1f} s")

    rows: dict[str, dict[int, list[float]]] = {}

    def add(name: str, n: int, pred: np.ndarray, test: np.ndarray) -> None:
        rows.setdefault(name, {}).setdefault(n, []).append(float(kendalltau(pred, y[test])[0]))

    for n in SIZES:
        for rep in range(args.repeats):
            rng = np.random.default_rng(1000 * n + rep)
            perm = rng.permutation(len(idx))
            train, test = perm[:n], perm[n:]
            for target in ("raw", "rank"):
                ens = MLPEnsemble(members=5, hidden=32, epochs=300, target=target, seed=rep)
                ens.fit(X[train], y[train])
                ridge = Ridge(1.0, target=target).fit(X[train], y[train])
                scores = Scorer(sizes, ens, ridge).score(idx[test])
                add(f"mlp ensemble, onehot, {target}", n, scores.mean, test)
                add(f"ridge, onehot, {target}", n, scores.ridge, test)
            if path is not None:
                ens = MLPEnsemble(members=5, hidden=32, epochs=300, target="rank", seed=rep)
                add("mlp ensemble, path, rank", n,
                    ens.fit(path[train], y[train]).predict(path[test])[0], test)

    print(f"Kendall tau on held-out NB201 cells (mean ± std over {args.repeats} draws)")
    print(f"{'predictor':34}" + "".join(f"{f'n={n}':>16}" for n in SIZES))
    for name, by_n in rows.items():
        print(f"{name:34}" + "".join(f"{np.mean(v):9.3f} ± {np.std(v):.3f}"
                                     for v in by_n.values()))
    print(json.dumps({"kendall_tau": {name: {str(n): round(float(np.mean(v)), 4)
                                             for n, v in by_n.items()}
                                      for name, by_n in rows.items()},
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
