"""The Relax lowering rules: one emitter per primitive op (:data:`LOWERINGS`, the unary
activations from ``_unary_table``, user ops through ``torch.export``), each turning a node
into ``relax.op`` calls with inference semantics. :func:`~nasir.backends.tvm.relax_lowering.lower`
walks a graph and applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nasir.backends.tvm.relax_fold import Folding
from nasir.backends.tvm.relax_weights import _has_bias, _probe
from nasir.errors import BackendError, NasirError
from nasir.graph import Node
from nasir.ops import pair

__all__ = ["LOWERINGS"]


class _Emitter:
    """Emits Relax for one graph; ``fetch(key, shape, transpose=False)`` gives weight
    ``key`` (transposed first if asked) in ``shape``. ``folding``: batch norms folded
    into the weights (:mod:`.relax_fold`; bound weights only)."""

    def __init__(self, bb: Any, batch: int, fetch: Callable[..., Any],
                 folding: Folding | None = None):
        self.bb = bb
        self.batch = batch
        self.fetch = fetch
        self.folding = folding
        #: functions were added for user ops; ``lower`` inlines them into ``main``
        self.inlined = False

    def has_bias(self, n: Node) -> bool:
        """Whether layer ``n`` adds a bias (its own, or one a folded batch norm gave it)."""
        return _has_bias(n) or (self.folding is not None and n.name in self.folding.biased)

    def emit(self, expr: Any) -> Any:
        return self.bb.emit(expr)


def _conv(em: _Emitter, n: Node, x: Any, specs: Mapping[str, tuple[int, ...]]) -> Any:
    from tvm.relax import op as R

    op: Any = n.op  # dispatched by name: the op's fields are read as its class has them
    dh, dw = pair(op.dilation)
    ph, pw = op.pads()
    cin = n.inputs[0].shape[0]
    groups = cin if op.name == "depthwise_conv2d" else op.groups
    w = em.fetch(f"{n.name}.weight", specs[f"{n.name}.weight"])
    y = em.emit(R.nn.conv2d(x, w, strides=pair(op.stride), padding=(ph, pw, ph, pw),
                            dilation=(dh, dw), groups=groups))
    if em.has_bias(n):
        y = em.emit(R.add(y, em.fetch(f"{n.name}.bias", (1, n.shape[0], 1, 1))))
    return y


def _batch_norm(em: _Emitter, n: Node, x: Any, specs: Mapping[str, tuple[int, ...]]) -> Any:
    from tvm import relax
    from tvm.relax import op as R

    op: Any = n.op
    c = n.shape[0]
    if em.folding is not None and n.name in em.folding.absorbed:
        return x
    if em.folding is not None and n.name in em.folding.affine:
        shape = (1, c, *([1] * (len(n.shape) - 1)))
        y = em.emit(R.multiply(x, em.fetch(f"{n.name}.scale", shape)))
        return em.emit(R.add(y, em.fetch(f"{n.name}.shift", shape)))
    if op.affine:
        gamma = em.fetch(f"{n.name}.weight", (c,))
        beta = em.fetch(f"{n.name}.bias", (c,))
    else:
        gamma = relax.const(np.ones(c, np.float32))
        beta = relax.const(np.zeros(c, np.float32))
    mean = em.fetch(f"{n.name}.running_mean", (c,))
    var = em.fetch(f"{n.name}.running_var", (c,))
    bn = em.emit(R.nn.batch_norm(x, gamma, beta, mean, var, axis=1,
                                 epsilon=float(op.eps), training=False))
    return em.emit(relax.TupleGetItem(bn, 0))


def _hard(x: Any, sigmoid_only: bool) -> Any:
    from tvm import relax
    from tvm.relax import op as R

    gate = R.divide(R.nn.relu6(R.add(x, relax.const(3.0, "float32"))),
                    relax.const(6.0, "float32"))
    return gate if sigmoid_only else R.multiply(x, gate)


def _pool(em: _Emitter, n: Node, x: Any) -> Any:
    from tvm.relax import op as R

    op: Any = n.op  # dispatched by name: the op's fields are read as its class has them
    k = pair(op.kernel)
    s = op.strides()
    ph, pw = op.pads()
    if op.name == "max_pool2d":
        return em.emit(R.nn.max_pool2d(x, k, s, (ph, pw, ph, pw),
                                       ceil_mode=bool(op.ceil_mode)))
    return em.emit(R.nn.avg_pool2d(x, k, s, (ph, pw, ph, pw), ceil_mode=bool(op.ceil_mode),
                                   count_include_pad=bool(op.count_include_pad)))


def _linear(em: _Emitter, n: Node, x: Any, specs: Mapping[str, tuple[int, ...]]) -> Any:
    from tvm.relax import op as R

    fout, fin = specs[f"{n.name}.weight"]
    y = em.emit(R.matmul(x, em.fetch(f"{n.name}.weight", (fin, fout), transpose=True)))
    if em.has_bias(n):
        y = em.emit(R.add(y, em.fetch(f"{n.name}.bias", (1, fout))))
    return y


def _crop(em: _Emitter, n: Node, x: Any) -> Any:
    from tvm.relax import op as R

    op: Any = n.op  # dispatched by name: the op's fields are read as its class has them
    _, h, w = n.inputs[0].shape
    return em.emit(R.strided_slice(x, axes=[2, 3], begin=[op.top, op.left],
                                   end=[h - op.bottom, w - op.right]))


def _pad(em: _Emitter, n: Node, x: Any) -> Any:
    from tvm.relax import op as R

    op: Any = n.op  # dispatched by name: the op's fields are read as its class has them
    return em.emit(R.nn.pad(x, [0, 0, 0, 0, op.top, op.bottom, op.left, op.right]))


def _simple(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    def lowering(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
        return em.emit(fn(ins[0]))

    return lowering


def _unary_table() -> dict[str, Callable[..., Any]]:
    from tvm.relax import op as R

    return {
        "relu": _simple(R.nn.relu),
        "relu6": _simple(R.nn.relu6),
        "swish": _simple(R.nn.silu),
        "sigmoid": _simple(R.sigmoid),
        "hardswish": _simple(lambda x: _hard(x, False)),
        "hardsigmoid": _simple(lambda x: _hard(x, True)),
        "zero": _simple(R.zeros_like),
    }


def _passthrough(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    return ins[0]


def _flatten(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    from tvm.relax import op as R

    return em.emit(R.reshape(ins[0], (em.batch, n.shape[0])))


def _gap(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    from tvm.relax import op as R

    return em.emit(R.mean(ins[0], axis=[2, 3], keepdims=bool(n.op.keepdims)))  # type: ignore[attr-defined]


def _add(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    from tvm.relax import op as R

    acc = ins[0]
    for x in ins[1:]:
        acc = em.emit(R.add(acc, x))
    return acc


def _concat(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    from tvm.relax import op as R

    return em.emit(R.concat(ins, axis=1)) if len(ins) > 1 else ins[0]


def _mul(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    from tvm.relax import op as R

    return em.emit(R.multiply(ins[0], ins[1]))


def _user(em: _Emitter, n: Node, ins: list[Any], specs: Any) -> Any:
    """A call of the user module's imported function (inlined into ``main`` afterwards)."""
    from tvm import relax

    from nasir.backends.tvm.user_import import import_user_op

    _probe(n)
    try:
        fn, names = import_user_op(n.op, n.inputs[0].type, em.batch)
    except NasirError as e:
        raise BackendError(e.message, where=f"node %{n.name} ({n.op.name})", loc=n.loc,
                           hint=e.hint) from None
    gv = em.bb.add_func(fn, f"user_{n.op.name}_{n.name}")
    state = [em.fetch(f"{n.name}.{k}", specs[f"{n.name}.{k}"]) for k in names]
    em.inlined = True
    return em.emit(relax.Call(gv, [ins[0], *state]))


#: primitive op name → ``fn(emitter, node, relax inputs, weight shapes) -> relax value``
LOWERINGS: dict[str, Callable[..., Any]] = {
    "conv2d": lambda em, n, ins, sp: _conv(em, n, ins[0], sp),
    "depthwise_conv2d": lambda em, n, ins, sp: _conv(em, n, ins[0], sp),
    "batch_norm": lambda em, n, ins, sp: _batch_norm(em, n, ins[0], sp),
    "max_pool2d": lambda em, n, ins, sp: _pool(em, n, ins[0]),
    "avg_pool2d": lambda em, n, ins, sp: _pool(em, n, ins[0]),
    "linear": lambda em, n, ins, sp: _linear(em, n, ins[0], sp),
    "crop": lambda em, n, ins, sp: _crop(em, n, ins[0]),
    "pad": lambda em, n, ins, sp: _pad(em, n, ins[0]),
    "identity": _passthrough,
    "dropout": _passthrough,
    "flatten": _flatten,
    "global_avg_pool": _gap,
    "add": _add,
    "concat": _concat,
    "mul": _mul,
}
