"""How :func:`~nasir.backends.torch.lowering.lower` initialises weights: per module type
(Kaiming-normal convs, uniform linear, BN γ=1 β=0) from a generator seeded by the run's seed
and either graph order or each node's expression hash (:func:`expression_hashes`), and user
modules built by the user's own code from a seeded generator.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from nasir.errors import BackendError, NasirError
from nasir.graph import Graph, Node

__all__ = ["expression_hashes"]


def _init_module(m: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                    generator=gen)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / max(1, m.in_features) ** 0.5
            m.weight.uniform_(-bound, bound, generator=gen)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=gen)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if m.running_mean is not None and m.running_var is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            if m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def _seed_of(*parts: object) -> int:
    h = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def expression_hashes(g: Graph) -> dict[Node, str]:
    """Merkle hash of each node's expression: op, attributes, type and its inputs' hashes.

    It follows the canonical rules of :mod:`nasir.passes.hashing` (identity is its input,
    zero operands of ``add`` drop out, commutative inputs are sorted), so two graphs with
    equal canonical hashes give every live parameterised node the same hash.
    """
    from nasir.passes.hashing import node_hashes

    return node_hashes(g)


def _initialise(g: Graph, mods: dict[str, nn.Module], seed: int,
                hashes: dict[Node, str] | None) -> None:
    if hashes is None:
        gen = torch.Generator().manual_seed(seed)
        for m in mods.values():
            _init_module(m, gen)
        return
    by_name = {n.name: n for n in g.nodes()}
    for name, m in mods.items():
        gen = torch.Generator().manual_seed(_seed_of(seed, hashes[by_name[name]]))
        _init_module(m, gen)


def _user_module(n: Node, seed: int, hashes: dict[Node, str] | None) -> nn.Module:
    """The user's module for a user-op node, initialised by its own code from a generator
    seeded like the other nodes' (by name, or by expression hash with ``init="hash"``)."""
    op: Any = n.op
    t = n.inputs[0].type
    try:
        op.probe(t)  # the module gives the type the shape rule promised
        return op.build_module(t, seed=_seed_of(seed, "user", hashes[n] if hashes else n.name))
    except NasirError as e:
        raise BackendError(e.message, where=f"node %{n.name} ({op.name})", loc=n.loc,
                           hint=e.hint) from None


# -- lowering -------------------------------------------------------------------------
