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
from collections.abc import Callable, Mapping
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


# -- lowering rules: one registry entry an op --------------------------------------------
#: op name → the node's weight module (``rule(node, in_channels)``); node ``%N`` becomes
#: submodule ``"N"``
MODULE_RULES: dict[str, Callable[[Node, int], nn.Module]] = {}
#: op name → the call of a weight-free op: ``rule(fx_graph, op, args)`` returns
#: ``(target, args, kwargs, kind)`` of the fx node (``kind``: ``call_function`` /
#: ``call_method``); it may add helper nodes to ``fx_graph`` first
CALL_RULES: dict[str, Callable[[fx.Graph, Any, list[fx.Node]], tuple[Any, tuple, dict | None,
                                                                       str]]] = {}
#: ops lowered without a rule: inputs become placeholders, identities their operand
_STRUCTURAL = ("input", "identity")


def _module(name: str) -> Callable[[Callable[[Node, int], nn.Module]],
                                   Callable[[Node, int], nn.Module]]:
    def deco(fn: Callable[[Node, int], nn.Module]) -> Callable[[Node, int], nn.Module]:
        MODULE_RULES[name] = fn
        return fn
    return deco


@_module("conv2d")
def _conv(n: Node, cin: int) -> nn.Module:
    op: Any = n.op
    return nn.Conv2d(cin, op.out_channels, pair(op.kernel), pair(op.stride), op.pads(),
                     pair(op.dilation), op.groups, op.bias)


@_module("depthwise_conv2d")
def _dwconv(n: Node, cin: int) -> nn.Module:
    op: Any = n.op
    return nn.Conv2d(cin, cin * op.multiplier, pair(op.kernel), pair(op.stride), op.pads(),
                     pair(op.dilation), cin, op.bias)


@_module("batch_norm")
def _bn(n: Node, cin: int) -> nn.Module:
    op: Any = n.op
    cls = BatchNorm2d if n.ttype.rank == 3 else BatchNorm1d
    return cls(cin, eps=op.eps, momentum=op.momentum, affine=op.affine)


MODULE_RULES["linear"] = lambda n, cin: nn.Linear(cin, n.op.out_features,  # type: ignore[attr-defined]
                                                  n.op.bias)  # type: ignore[attr-defined]
MODULE_RULES["dropout"] = lambda n, cin: nn.Dropout(n.op.p)  # type: ignore[attr-defined]


def _module_for(n: Node) -> nn.Module | None:
    rule = MODULE_RULES.get(n.op.name)
    if rule is None:
        return None
    return rule(n, n.inputs[0].shape[0] if n.inputs else 0)


def _fn(target: Any) -> Callable[[fx.Graph, Any, list[fx.Node]], tuple]:
    """The rule of an op that is ``target(first operand)``."""
    return lambda fg, op, a: (target, (a[0],), None, "call_function")


for _name, _target in {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish,
                       "swish": F.silu, "sigmoid": torch.sigmoid,
                       "hardsigmoid": F.hardsigmoid, "zero": torch.zeros_like}.items():
    CALL_RULES[_name] = _fn(_target)


def _pool(fg: fx.Graph, op: Any, a: list[fx.Node]) -> tuple:
    kw: dict[str, Any] = {"stride": op.strides(), "padding": op.pads(),
                          "ceil_mode": op.ceil_mode}
    if op.name == "avg_pool2d":
        kw["count_include_pad"] = op.count_include_pad
        return F.avg_pool2d, (a[0], pair(op.kernel)), kw, "call_function"
    return F.max_pool2d, (a[0], pair(op.kernel)), kw, "call_function"


def _add(fg: fx.Graph, op: Any, a: list[fx.Node]) -> tuple:
    out = a[0]
    for x in a[1:-1]:
        out = fg.call_function(operator.add, (out, x))
    return operator.add, (out, a[-1]), None, "call_function"


def _slice(lo: int, hi: int) -> slice:
    return slice(lo if lo else None, -hi if hi else None)


def _crop(fg: fx.Graph, op: Any, a: list[fx.Node]) -> tuple:
    idx = (slice(None), slice(None), _slice(op.top, op.bottom), _slice(op.left, op.right))
    return operator.getitem, (a[0], idx), None, "call_function"


CALL_RULES.update({
    "max_pool2d": _pool,
    "avg_pool2d": _pool,
    "global_avg_pool": lambda fg, op, a: ("mean", (a[0], (2, 3)), {"keepdim": op.keepdims},
                                          "call_method"),
    "add": _add,
    "mul": lambda fg, op, a: (operator.mul, (a[0], a[1]), None, "call_function"),
    "concat": lambda fg, op, a: (torch.cat, (list(a), 1), None, "call_function"),
    "flatten": lambda fg, op, a: (torch.flatten, (a[0], 1), None, "call_function"),
    "crop": _crop,
    "pad": lambda fg, op, a: (F.pad, (a[0], (op.left, op.right, op.top, op.bottom)), None,
                              "call_function"),
})


def _call(fg: fx.Graph, n: Node, args: list[fx.Node]) -> fx.Node:
    """The fx node computing a weight-free op (its :data:`CALL_RULES` entry)."""
    rule = CALL_RULES.get(n.op.name)
    if rule is None:
        raise BackendError(
            f"the torch backend cannot lower op {n.op.name!r}",
            where=f"node %{n.name}",
            loc=n.loc,
            hint="add a rule to MODULE_RULES or CALL_RULES in nasir/backends/torch/lowering.py"
            if not n.op.space_only else "instantiate the space first, or build a Supernet",
        )
    target, a, kw, kind = rule(fg, n.op, args)
    return fg.create_node(kind, target, a, kw, name=_fx_name(n))


def lowerable_ops() -> tuple[str, ...]:
    """Names of the primitive ops this backend lowers (user ops included).

    >>> "crop" in lowerable_ops() and "choose" not in lowerable_ops()
    True
    """
    return (*_STRUCTURAL, *MODULE_RULES, *CALL_RULES,
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
    """A verified, composite-free copy of ``graph`` (the graph itself is not changed):
    :func:`nasir.passes.prepare_for_lowering`, the same preparation as the TVM backend's."""
    return prepare_for_lowering(graph)


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
