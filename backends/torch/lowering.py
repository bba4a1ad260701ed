"""Lower a concrete nasir graph to a ``torch.fx.GraphModule``.

Every parameterised primitive node ``%N`` (after ``expand-composites``) becomes a
submodule called ``"N"``, so ``state_dict()`` keys are ``"N.weight"``, ``"N.bias"``,
``"N.running_mean"``, ``"N.running_var"`` in graph order (the weight-naming convention of
``docs/ARCHITECTURE.md``). A user op (:func:`nasir.ops.user_op`) becomes the user's module
as submodule ``"N"`` (keys ``"N."`` + its own state-dict keys), initialised by its own code
from a seeded generator. Ops without weights become calls of ``torch`` functions. The
result prints as plain Python (``module.code``) and works with ``torch.compile`` and
``torch.export``. Inputs are batched ``N×C×H×W`` tensors (IR types have no batch dim).

>>> import torch
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @tiny {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = conv_bn_act(%x) {out_channels=4}
...   %2 = global_avg_pool(%1) {keepdims=false}
...   %3 = linear(%2) {out_features=2}
...   return %3
... }''')
>>> m = lower(g, seed=0)
>>> [k.split(".")[1] for k in m.state_dict()][:6]
['weight', 'weight', 'bias', 'running_mean', 'running_var', 'weight']
>>> m(torch.zeros(5, 3, 8, 8)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import os

import torch.fx as fx
from torch import nn

from nasir.backends.torch.droppath import DropPath, drop_path_operands
from nasir.backends.torch.lowering_init import _initialise, _user_module, expression_hashes
from nasir.backends.torch.lowering_init import _seed_of as _seed_of  # supernet/build.py uses it
from nasir.backends.torch.lowering_rules import (
    CALL_RULES,
    MODULE_RULES,
    BatchNorm1d,
    BatchNorm2d,
    _call,
    _fx_name,
    _module_for,
    lowerable_ops,
)
from nasir.backends.torch.lowering_weights import inherit_weights, load_weights
from nasir.errors import BackendError
from nasir.graph import Graph, Node
from nasir.ops import UserOp
from nasir.passes import prepare_for_lowering

__all__ = [
    "CALL_RULES",
    "INITS",
    "MODULE_RULES",
    "BatchNorm1d",
    "BatchNorm2d",
    "expression_hashes",
    "inherit_weights",
    "load_weights",
    "lower",
    "lowerable_ops",
    "prepare",
]

#: weight initialisations ``lower`` knows
INITS = ("default", "hash")


def prepare(graph: Graph) -> Graph:
    """A verified, composite-free copy of ``graph`` (the graph itself is not changed):
    :func:`nasir.passes.prepare_for_lowering`, the same preparation as the TVM backend's."""
    return prepare_for_lowering(graph)


def lower(graph: Graph, *, seed: int | None = 0, init: str = "default",
          drop_path: bool = False) -> fx.GraphModule:
    """Lower a concrete graph to a ``torch.fx.GraphModule`` with seeded weights.

    Args:
        graph: a concrete (instantiated) nasir graph; it is copied, verified and expanded.
        seed: weights are a function of the seed (``None``: fresh random weights).
        init: ``"default"`` (Kaiming-normal convs, uniform linear, BN γ=1 β=0, drawn in graph
            order) or ``"hash"`` (each node's weights drawn from a generator seeded by the
            structural hash of its sub-expression, so equal expressions get equal weights).
        drop_path: insert a shared ``DropPath`` module (``module.drop_path``, ``p=0`` until
            set) on the cell-edge operands of ``add`` nodes; see :mod:`.droppath`.

    Returns a module taking one batched tensor per graph input, in graph order.
    """
    if init not in INITS:
        raise BackendError(f"unknown init {init!r}", hint=f"use one of {', '.join(INITS)}")
    g = prepare(graph)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    hashes = expression_hashes(g) if init == "hash" else None
    fg = fx.Graph()
    env: dict[Node, fx.Node] = {}
    mods: dict[str, nn.Module] = {}
    users: dict[str, nn.Module] = {}
    drops = drop_path_operands(g) if drop_path else {}
    for n in g.nodes():
        if "." in n.name:
            raise BackendError(f"node name %{n.name} contains '.'", loc=n.loc,
                               hint="weight names are 'N.weight'; rename the node")
        args = [env[i] for i in n.inputs]
        for k in drops.get(n, ()):
            args[k] = fg.call_module("drop_path", (args[k],))
        name = n.op.name
        if name == "input":
            env[n] = fg.placeholder(_fx_name(n))
            continue
        if name == "identity":
            env[n] = args[0]
            continue
        if isinstance(n.op, UserOp):
            users[n.name] = _user_module(n, seed, hashes)
            env[n] = fg.create_node("call_module", n.name, tuple(args), name=_fx_name(n))
            continue
        m = _module_for(n)
        if m is not None:
            mods[n.name] = m
            env[n] = fg.create_node("call_module", n.name, tuple(args), name=_fx_name(n))
        else:
            env[n] = _call(fg, n, args)
    fg.output(env[g.output])
    _initialise(g, mods, seed, hashes)
    mods.update(users)
    root = nn.Module()
    for k in (n.name for n in g.nodes() if n.name in mods):  # graph order
        root.add_module(k, mods[k])
    if drop_path:
        if "drop_path" in mods:
            raise BackendError("a node is called %drop_path", hint="rename it")
        root.add_module("drop_path", DropPath(0.0))
    cls = "".join(c if c.isalnum() else "_" for c in g.name).capitalize() or "Net"
    gm = fx.GraphModule(root, fg, class_name=f"Lowered{cls}")
    return gm
