"""The torch lowering registry: one rule per op. :data:`MODULE_RULES` gives a node's weight
module, :data:`CALL_RULES` the fx call of a weight-free op; BatchNorm modules without the
``num_batches_tracked`` counter; :func:`lowerable_ops`. :func:`~nasir.backends.torch.lowering.lower`
walks a graph and applies them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasir.errors import BackendError
from nasir.graph import Node
from nasir.ops import (
    OPS,
    BatchNormOp,
    Conv2dOp,
    DepthwiseConv2dOp,
    DropoutOp,
    LinearOp,
    Op,
    UserOp,
    concrete,
    pair,
)

__all__ = ["CALL_RULES", "MODULE_RULES", "BatchNorm1d", "BatchNorm2d", "lowerable_ops"]


if TYPE_CHECKING:
    _MixinBase = nn.Module  # what the mixin is mixed into
else:
    _MixinBase = object


class _NoCounterMixin(_MixinBase):
    """Drop BatchNorm's ``num_batches_tracked`` counter from the state dict.

    The counter only matters when ``momentum=None``; dropping it keeps ``state_dict()`` to
    exactly the four tensors of the naming convention. A loaded state dict that carries the
    counter (torchvision's) is accepted and the counter ignored, and so is one that lost its
    version metadata (which would make torch try to add the counter back).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        meta = dict(local_metadata, version=2)  # no counter to upgrade old dicts with
        super()._load_from_state_dict(
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


_O = TypeVar("_O", bound=Op)


def _op(n: Node, cls: type[_O]) -> _O:
    """``n.op`` as ``cls``: the rules are keyed by op name and a name is one class."""
    op = n.op
    if not isinstance(op, cls):
        raise BackendError(f"%{n.name}: a {op.name!r} op of class {type(op).__name__} "
                           f"reached the rule for {cls.__name__}")
    return op


@_module("conv2d")
def _conv(n: Node, cin: int) -> nn.Module:
    op = _op(n, Conv2dOp)
    return nn.Conv2d(cin, concrete(op.out_channels), pair(op.kernel), pair(op.stride),
                     op.pads(), pair(op.dilation), concrete(op.groups), op.bias)


@_module("depthwise_conv2d")
def _dwconv(n: Node, cin: int) -> nn.Module:
    op = _op(n, DepthwiseConv2dOp)
    return nn.Conv2d(cin, cin * op.multiplier, pair(op.kernel), pair(op.stride), op.pads(),
                     pair(op.dilation), cin, op.bias)


@_module("batch_norm")
def _bn(n: Node, cin: int) -> nn.Module:
    op = _op(n, BatchNormOp)
    cls = BatchNorm2d if n.ttype.rank == 3 else BatchNorm1d
    return cls(cin, eps=op.eps, momentum=op.momentum, affine=op.affine)


@_module("linear")
def _linear(n: Node, cin: int) -> nn.Module:
    op = _op(n, LinearOp)
    return nn.Linear(cin, concrete(op.out_features), op.bias)


@_module("dropout")
def _dropout(n: Node, cin: int) -> nn.Module:
    return nn.Dropout(concrete(_op(n, DropoutOp).p))


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


def _fx_name(n: Node) -> str:
    clean = "".join(c if c.isalnum() else "_" for c in n.name)
    return clean if n.op.name == "input" and clean.isidentifier() else f"{n.op.name}_{clean}"
