"""Encodings of assignments for surrogates, as batched numpy arrays.

Feature order (stable, documented per space by :func:`feature_names`):

* ``onehot``: decisions in schema order, each as one column per option in option order.
* ``indices``: one integer column per decision (the option index).
* ``adjacency``: for spaces with a cell view (NB201), the cell's op nodes in topological
  order, padded to ``max_nodes``: a flattened upper-triangular adjacency matrix followed by
  one-hot op rows over the space's op vocabulary.
* ``path``: BANANAS path encoding for cell spaces: one column per op sequence of length
  1..L along input→output paths (paths through a zero op are dropped), sequences in
  lexicographic order of the vocabulary, shorter first.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> encode(sp, [sp.reference("resnet")], "onehot").shape
(1, 30)
>>> float(encode(sp, [sp.reference("resnet")], "path").sum())  # only the skip path
1.0
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nasir.errors import SpecError
from nasir.graph import Graph, Node
from nasir.space import Space

__all__ = ["ENCODINGS", "encode", "feature_names"]

ENCODINGS = ("onehot", "indices", "adjacency", "path")


def _onehot(space: Space, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    sizes = [d.size for d in space.decisions]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    idx = np.array([space.indices(a) for a in rows], dtype=np.int64).reshape(len(rows), -1)
    out = np.zeros((len(rows), int(sum(sizes))), dtype=np.float32)
    if idx.size:
        out[np.arange(len(rows))[:, None], idx + offsets[None, :]] = 1.0
    return out


def _cell(space: Space, a: Mapping[str, Any]) -> Graph:
    if space.view is None:
        raise SpecError(f"encoding needs a cell space; {space.name} has no cell view",
                        hint="use the onehot or indices encoding for this space")
    return space.hash_view(a)


def _vocab(space: Space) -> list[str]:
    def build() -> list[str]:
        sigs: set[str] = set()
        for d in space.decisions:
            if d.kind == "op":
                for o in d.options:
                    vals = {x.label: x.options[0] for x in space.decisions}
                    vals[d.label] = o
                    g = _cell(space, space.check(vals))
                    sigs.update(_sig(n) for n in g.nodes() if _is_edge(n))
        return sorted(sigs)

    return list(space.memo("op_vocab", build))


def _is_edge(n: Node) -> bool:
    return bool(n.inputs) and n.op.name not in ("add", "concat")


def _sig(n: Node) -> str:
    return n.op.signature()


def _adjacency(space: Space, rows: Sequence[Mapping[str, Any]], max_nodes: int = 16) -> np.ndarray:
    vocab = _vocab(space)
    pos = {s: k for k, s in enumerate(vocab)}
    tri = np.triu_indices(max_nodes, 1)
    width = len(tri[0]) + max_nodes * (len(vocab) + 2)
    out = np.zeros((len(rows), width), dtype=np.float32)
    for r, a in enumerate(rows):
        g = _cell(space, a)
        nodes = g.nodes()
        if len(nodes) > max_nodes:
            raise SpecError(f"cell has {len(nodes)} nodes, more than max_nodes={max_nodes}")
        index = {n: k for k, n in enumerate(nodes)}
        adj = np.zeros((max_nodes, max_nodes), dtype=np.float32)
        ops = np.zeros((max_nodes, len(vocab) + 2), dtype=np.float32)
        for n in nodes:
            for i in n.inputs:
                adj[index[i], index[n]] = 1.0
            col = pos.get(_sig(n), -1) if _is_edge(n) else (len(vocab) if not n.inputs
                                                              else len(vocab) + 1)
            ops[index[n], col] = 1.0
        out[r] = np.concatenate([adj[tri], ops.ravel()])
    return out


def _paths(g: Graph) -> list[tuple[str, ...]]:
    paths: dict[Node, list[tuple[str, ...]]] = {}
    for n in g.nodes():
        if not n.inputs:
            paths[n] = [()]
        elif n.op.name == "zero":
            paths[n] = []
        elif _is_edge(n):
            paths[n] = [(*p, _sig(n)) for p in paths[n.inputs[0]]]
        else:
            paths[n] = [p for i in n.inputs for p in paths[i]]
    return paths[g.output]


def _path(space: Space, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    vocab = _vocab(space)
    depth = int(space.meta.get("path_length", 3))
    index: dict[tuple[str, ...], int] = {}
    for length in range(1, depth + 1):
        for seq in itertools.product(vocab, repeat=length):
            index[seq] = len(index)
    out = np.zeros((len(rows), len(index)), dtype=np.float32)
    for r, a in enumerate(rows):
        for p in _paths(_cell(space, a)):
            if p and p in index:
                out[r, index[p]] = 1.0
    return out


def encode(space: Space, assignments: Sequence[Mapping[str, Any]], kind: str = "onehot"
           ) -> np.ndarray:
    """Encode ``assignments`` as a ``(n, features)`` float32 array (``indices``: int64)."""
    if kind == "onehot":
        return _onehot(space, assignments)
    if kind == "indices":
        return np.array([space.indices(a) for a in assignments], dtype=np.int64).reshape(
            len(assignments), len(space.decisions))
    if kind == "adjacency":
        return _adjacency(space, assignments)
    if kind == "path":
        return _path(space, assignments)
    raise SpecError(f"unknown encoding {kind!r}", hint=f"use one of {', '.join(ENCODINGS)}")


def feature_names(space: Space, kind: str = "onehot") -> list[str]:
    """Names of the feature columns, in order (``onehot``, ``indices`` and ``path``)."""
    if kind == "onehot":
        return [f"{d.label}={o}" for d in space.decisions for o in d.options]
    if kind == "indices":
        return [d.label for d in space.decisions]
    if kind == "path":
        vocab = _vocab(space)
        depth = int(space.meta.get("path_length", 3))
        return [" > ".join(seq) for length in range(1, depth + 1)
                for seq in itertools.product(vocab, repeat=length)]
    raise SpecError(f"feature names are listed for onehot, indices and path, not {kind!r}")
