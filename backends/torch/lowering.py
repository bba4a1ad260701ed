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

import hashlib
import operator
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.droppath import DropPath, drop_path_operands
from nasir.errors import BackendError, NasirError
from nasir.graph import Graph, Node
from nasir.ops import OPS, UserOp, pair
from nasir.passes import expand_composites, verify

__all__ = [
    "INITS",
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

_SPACE_ONLY = ("arg", "choose", "repeat", "select")


class _NoCounterMixin:
    """Drop BatchNorm's ``num_batches_tracked`` counter from the state dict.

    The counter only matters when ``momentum=None``; dropping it keeps ``state_dict()`` to
    exactly the four tensors of the naming convention. A loaded state dict that carries the
    counter (torchvision's) is accepted and the counter ignored, and so is one that lost its
    version metadata (which would make torch try to add the counter back).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("num_batches_tracked", None)  # type: ignore[attr-defined]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        meta = dict(local_metadata, version=2)  # no counter to upgrade old dicts with
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, meta, *args, **kwargs)


class BatchNorm2d(_NoCounterMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` without the ``num_batches_tracked`` counter."""


class BatchNorm1d(_NoCounterMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` without the ``num_batches_tracked`` counter."""


# -- modules for parameterised ops -----------------------------------------------------


def _padding(op: Any) -> tuple[int, int]:
    if op.padding is None:
        kh, kw = pair(op.kernel)
        dh, dw = pair(op.dilation)
        return (dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2
    return pair(op.padding)


def _module_for(n: Node) -> nn.Module | None:
    op: Any = n.op
    cin = n.inputs[0].type.shape[0] if n.inputs else 0  # type: ignore[union-attr]
    name = op.name
    if name == "conv2d":
        return nn.Conv2d(cin, op.out_channels, pair(op.kernel), pair(op.stride), _padding(op),
                         pair(op.dilation), op.groups, op.bias)
    if name == "depthwise_conv2d":
        return nn.Conv2d(cin, cin * op.multiplier, pair(op.kernel), pair(op.stride),
                         _padding(op), pair(op.dilation), cin, op.bias)
    if name == "batch_norm":
        cls = BatchNorm2d if n.type.rank == 3 else BatchNorm1d  # type: ignore[union-attr]
        return cls(cin, eps=op.eps, momentum=op.momentum, affine=op.affine)
    if name == "linear":
        return nn.Linear(cin, op.out_features, op.bias)
    if name == "dropout":
        return nn.Dropout(op.p)
    return None


_ACTS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "hardswish": F.hardswish,
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
}


def _slice(lo: int, hi: int) -> slice:
    return slice(lo if lo else None, -hi if hi else None)


def _call(fg: fx.Graph, n: Node, args: list[fx.Node]) -> fx.Node:
    """The fx node computing a weight-free op."""
    op: Any = n.op
    name = op.name
    label = _fx_name(n)

    def call(target: Any, a: tuple, kw: dict | None = None, kind: str = "call_function"):
        return fg.create_node(kind, target, a, kw, name=label)

    fn = _ACTS.get(name)
    if fn is not None:
        return call(fn, (args[0],))
    if name == "zero":
        return call(torch.zeros_like, (args[0],))
    if name in ("max_pool2d", "avg_pool2d"):
        k = pair(op.kernel)
        s = k if op.stride is None else pair(op.stride)
        kw: dict[str, Any] = {"stride": s, "padding": pair(op.padding), "ceil_mode": op.ceil_mode}
        if name == "avg_pool2d":
            kw["count_include_pad"] = op.count_include_pad
            return call(F.avg_pool2d, (args[0], k), kw)
        return call(F.max_pool2d, (args[0], k), kw)
    if name == "global_avg_pool":
        return call("mean", (args[0], (2, 3)), {"keepdim": op.keepdims}, "call_method")
    if name == "add":
        out = args[0]
        for a in args[1:-1]:
            out = fg.call_function(operator.add, (out, a))
        return call(operator.add, (out, args[-1]))
    if name == "mul":
        return call(operator.mul, (args[0], args[1]))
    if name == "concat":
        return call(torch.cat, (list(args), 1))
    if name == "flatten":
        return call(torch.flatten, (args[0], 1))
    if name == "crop":
        idx = (slice(None), slice(None), _slice(op.top, op.bottom), _slice(op.left, op.right))
        return call(operator.getitem, (args[0], idx))
    if name == "pad":
        return call(F.pad, (args[0], (op.left, op.right, op.top, op.bottom)))
    raise BackendError(
        f"the torch backend cannot lower op {name!r}",
        where=f"node %{n.name}",
        loc=n.loc,
        hint="add a lowering rule to nasir/backends/torch/lowering.py"
        if name not in _SPACE_ONLY else "instantiate the space first, or build a Supernet",
    )


def lowerable_ops() -> tuple[str, ...]:
    """Names of the primitive ops this backend lowers (user ops included).

    >>> "crop" in lowerable_ops() and "choose" not in lowerable_ops()
    True
    """
    return (*_ACTS, "input", "conv2d", "depthwise_conv2d", "batch_norm", "linear", "dropout",
            "identity", "zero", "max_pool2d", "avg_pool2d", "global_avg_pool", "add", "mul",
            "concat", "flatten", "crop", "pad",
            *(name for name, cls in OPS.items() if issubclass(cls, UserOp)))


# -- initialisation -------------------------------------------------------------------


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


def prepare(graph: Graph) -> Graph:
    """A verified, composite-free copy of ``graph`` (the graph itself is not changed)."""
    if not isinstance(graph, Graph):
        raise BackendError(f"lower expects a nasir Graph, got {type(graph).__name__}",
                           hint="instantiate a space first: space.instantiate(assignment)")
    bad = [n for n in graph.nodes() if n.op.name in _SPACE_ONLY]
    if bad:
        raise BackendError(
            f"graph @{graph.name} still has choice points ({bad[0].op.name} at %{bad[0].name})",
            loc=bad[0].loc,
            hint="instantiate the space with an assignment, or use Supernet(space) for a "
                 "weight-sharing network of the whole space",
        )
    g = graph.copy()
    verify(g)
    expand_composites(g)
    return g


def _fx_name(n: Node) -> str:
    clean = "".join(c if c.isalnum() else "_" for c in n.name)
    return clean if n.op.name == "input" and clean.isidentifier() else f"{n.op.name}_{clean}"


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


def inherit_weights(module: nn.Module, weights: Mapping[str, Any]) -> int:
    """Start ``module`` from a related network's ``weights`` (name → tensor): every tensor
    of ``module.state_dict()`` whose name is in ``weights`` and whose shape is no larger in
    any dimension takes the leading slice of it (the first output filters and input
    channels; a layer NetAdapt narrowed keeps its first filters and the next layer the
    matching input channels). Others keep their initialisation. Returns how many tensors
    were taken.

    >>> import torch
    >>> from torch import nn
    >>> wide, narrow = nn.Conv2d(4, 8, 3), nn.Conv2d(4, 6, 3)
    >>> inherit_weights(narrow, wide.state_dict())
    2
    >>> torch.equal(narrow.weight, wide.weight[:6])
    True
    """
    state = module.state_dict()
    n = 0
    with torch.no_grad():
        for k, dst in state.items():
            src = weights.get(k)
            if src is None:
                continue
            src = torch.as_tensor(src)
            if src.dim() != dst.dim() or any(a > b for a, b in zip(dst.shape, src.shape)):
                continue
            dst.copy_(src[tuple(slice(0, d) for d in dst.shape)])
            n += 1
    return n


def load_weights(module: nn.Module, weights: Mapping[str, Any], *, strict: bool = True) -> None:
    """Copy ``weights`` (name → numpy array or tensor) into ``module``, in any key order.

    With ``strict`` every floating-point tensor of ``module.state_dict()`` must be given
    and no other; shapes must match. Raises ``BackendError`` naming the offending keys.

    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Linear(2, 1)
    >>> load_weights(m, {"bias": np.zeros(1), "weight": np.ones((1, 2))})
    >>> m.weight.tolist()
    [[1.0, 1.0]]
    """
    state = module.state_dict()
    # integer buffers (a user module's BatchNorm counter) are not weights
    missing = [k for k in state if k not in weights and state[k].is_floating_point()]
    extra = [k for k in weights if k not in state]
    if strict and (missing or extra):
        raise BackendError(
            f"weights do not match the module: {len(missing)} missing, {len(extra)} unexpected",
            where=f"missing {missing[:3]}, unexpected {extra[:3]}",
            hint="keys follow 'N.weight'/'N.bias'/'N.running_mean'/'N.running_var' of the "
                 "expanded graph; compare with list(module.state_dict())",
        )
    with torch.no_grad():
        for k, v in weights.items():
            if k not in state:
                continue
            t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
            if tuple(t.shape) != tuple(state[k].shape):
                raise BackendError(f"weight {k} has shape {tuple(t.shape)}, the module "
                                   f"expects {tuple(state[k].shape)}", where=k)
            state[k].copy_(t.to(state[k].dtype))
