"""Lower a concrete nasir graph straight to a Relax module (``BlockBuilder`` + ``relax.op``).

The graph is copied, verified and passed through ``expand_composites``; every primitive op
is then emitted as Relax ops with inference semantics (batch norm uses running statistics,
dropout is the identity). Inputs are batched NCHW (a batch dimension is added in front of
each per-sample type). Weights follow the naming shared by the backends
(``"N.weight"``, ``"N.bias"``, ``"N.running_mean"``, ``"N.running_var"`` for primitive
node ``%N`` after expansion, PyTorch layouts) and are either bound as constants or
left as function parameters. A user op's module is imported through ``torch.export``
(:mod:`.user_import`), called with its weights ``"N."`` + its floating-point state-dict
keys, and inlined into the function.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[3, 8, 8]}
...   %1 = conv_bn_act(%x) {out_channels=4, kernel=3, stride=2}
...   return %1
... }''')
>>> [(k, v) for k, v in param_specs(prepare(g)).items()][:2]
[('2.weight', (4, 3, 3, 3)), ('3.weight', (4,))]
>>> mod = lower(g, batch=2)
>>> mod["main"].ret_ty
R.Tensor((2, 4, 4, 4), dtype="float32")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nasir.errors import BackendError, NasirError
from nasir.graph import Graph, Node
from nasir.ops import UserOp, pair

__all__ = ["LOWERINGS", "lower", "param_specs", "prepare", "random_weights"]

_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64"}


def prepare(graph: Graph) -> Graph:
    """A verified copy of ``graph`` with composites expanded (the input is not changed):
    :func:`nasir.passes.prepare_for_lowering`, the same preparation as the torch backend's."""
    from nasir.passes import prepare_for_lowering

    return prepare_for_lowering(graph)


def _has_bias(n: Node) -> bool:
    return bool(getattr(n.op, "bias", False))


def param_specs(g: Graph) -> dict[str, tuple[int, ...]]:
    """Name → shape of every weight tensor of an expanded, typed graph, in graph order."""
    out: dict[str, tuple[int, ...]] = {}
    for n in g.nodes():
        op: Any = n.op  # dispatched by name: the op's fields are read as its class has them
        name = op.name
        if name in ("conv2d", "depthwise_conv2d"):
            cin = n.inputs[0].shape[0]
            cout = n.shape[0]
            kh, kw = pair(op.kernel)
            per = 1 if name == "depthwise_conv2d" else cin // op.groups
            out[f"{n.name}.weight"] = (cout, per, kh, kw)
            if _has_bias(n):
                out[f"{n.name}.bias"] = (cout,)
        elif name == "batch_norm":
            c = n.shape[0]
            if op.affine:
                out[f"{n.name}.weight"] = (c,)
                out[f"{n.name}.bias"] = (c,)
            out[f"{n.name}.running_mean"] = (c,)
            out[f"{n.name}.running_var"] = (c,)
        elif name == "linear":
            fin = n.inputs[0].shape[0]
            out[f"{n.name}.weight"] = (n.shape[0], fin)
            if _has_bias(n):
                out[f"{n.name}.bias"] = (n.shape[0],)
        elif isinstance(op, UserOp):
            for k, shape in _probe(n).state.items():
                out[f"{n.name}.{k}"] = shape
    return out


def _probe(n: Node) -> Any:
    try:
        return n.op.probe(n.inputs[0].type)  # type: ignore[attr-defined]  # a UserOp
    except NasirError as e:
        raise BackendError(e.message, where=f"node %{n.name} ({n.op.name})", loc=n.loc,
                           hint=e.hint) from None


def _user_weights(g: Graph, seed: int) -> dict[str, np.ndarray]:
    """Weights of user-op modules: their own initialisation, from a seeded generator."""
    out: dict[str, np.ndarray] = {}
    for k, n in enumerate(g.nodes()):
        if isinstance(n.op, UserOp):
            _probe(n)
            op: Any = n.op
            m = op.build_module(n.inputs[0].type, seed=(seed * 1_000_003 + k) % (1 << 63))
            for key, v in m.state_dict().items():
                if v.is_floating_point():
                    out[f"{n.name}.{key}"] = v.detach().float().numpy().copy()
    return out


def random_weights(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Well-scaled random weights for an expanded graph (He-normal convs, BN stats near 1;
    a user op's module keeps its own initialisation, drawn from a seeded generator).

    >>> from nasir.text import parse_graph
    >>> g = prepare(parse_graph('''graph @g {
    ...   %x = input() {shape=[4]}
    ...   %1 = linear(%x) {out_features=2}
    ...   return %1
    ... }'''))
    >>> {k: v.shape for k, v in random_weights(g, seed=1).items()}
    {'1.weight': (2, 4), '1.bias': (2,)}
    """
    rng = np.random.default_rng(seed)
    user = _user_weights(g, seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in param_specs(g).items():
        if key in user:
            out[key] = user[key]
            continue
        field = key.rsplit(".", 1)[1]
        if field == "weight" and len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif field == "weight" or field == "running_var":
            v = rng.uniform(0.5, 1.5, shape)
        else:
            v = rng.normal(0.0, 0.1, shape)
        out[key] = v.astype(np.float32)
    return out


class _Emitter:
    """Emits Relax for one graph; weights come from ``fetch(key, shape)``."""

    def __init__(self, bb: Any, batch: int, fetch: Callable[[str, tuple[int, ...]], Any]):
        self.bb = bb
        self.batch = batch
        self.fetch = fetch
        #: functions were added for user ops; ``lower`` inlines them into ``main``
        self.inlined = False

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
    if _has_bias(n):
        b = em.fetch(f"{n.name}.bias", specs[f"{n.name}.bias"])
        y = em.emit(R.add(y, R.reshape(b, (1, -1, 1, 1))))
    return y


def _batch_norm(em: _Emitter, n: Node, x: Any, specs: Mapping[str, tuple[int, ...]]) -> Any:
    from tvm import relax
    from tvm.relax import op as R

    op: Any = n.op
    c = n.shape[0]
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

    w = em.fetch(f"{n.name}.weight", specs[f"{n.name}.weight"])
    b = em.fetch(f"{n.name}.bias", specs[f"{n.name}.bias"]) if _has_bias(n) else None
    return em.emit(R.linear(x, w, b))


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
        fn, names = import_user_op(n.op, n.inputs[0].type, em.batch)  # type: ignore[arg-type]
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


def _check_weights(specs: Mapping[str, tuple[int, ...]], weights: Mapping[str, Any]) -> None:
    missing = [k for k in specs if k not in weights]
    if missing:
        raise BackendError(f"weights lack {len(missing)} tensor(s), e.g. {missing[:3]}",
                           hint="give every 'N.weight'/'N.bias'/'N.running_*' of the expanded "
                                "graph (see param_specs), or pass weights=None to generate them")
    for k, shape in specs.items():
        got = tuple(np.shape(weights[k]))
        if got != shape:
            raise BackendError(f"weight {k} has shape {list(got)}, expected {list(shape)}",
                               hint="weights use PyTorch layouts (conv [out, in/groups, kh, kw])")


def lower(graph: Graph, weights: Mapping[str, Any] | None = None, *, batch: int = 1,
          seed: int = 0, bind_params: bool = True, func_name: str = "main") -> Any:
    """Lower ``graph`` to a ``tvm.IRModule`` with one Relax function ``func_name``.

    Args:
        graph: a concrete graph (composites are expanded on a copy).
        weights: ``name → numpy array`` in the shared naming; ``None`` → ``random_weights``.
        batch: batch size of every input (inputs are ``(batch, *per_sample_shape)``).
        seed: seed of generated weights.
        bind_params: bind weights as constants; otherwise they become function parameters
            after the inputs, in :func:`param_specs` order.
    """
    from tvm import relax

    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise BackendError(f"batch must be a positive int, got {batch!r}")
    g = prepare(graph)
    specs = param_specs(g)
    if weights is None:
        weights = random_weights(g, seed)
    _check_weights(specs, weights)
    unary = _unary_table()
    bb = relax.BlockBuilder()
    inputs = []
    for n in g.inputs:
        dtype = _DTYPES.get(n.type.dtype, "float32")  # type: ignore[union-attr]
        inputs.append(relax.Var(f"in_{n.name}",
                                relax.TensorType((batch, *n.shape), dtype)))
    pvars: dict[str, Any] = {}
    if not bind_params:
        for k, shape in specs.items():
            pvars[k] = relax.Var("p_" + k.replace(".", "_"), relax.TensorType(shape, "float32"))

    def fetch(key: str, shape: tuple[int, ...]) -> Any:
        if key in pvars:
            return pvars[key]
        return relax.const(np.asarray(weights[key], dtype=np.float32).reshape(shape))

    em = _Emitter(bb, batch, fetch)
    with bb.function(func_name, [*inputs, *pvars.values()]):
        with bb.dataflow():
            env: dict[Node, Any] = dict(zip(g.inputs, inputs))
            for n in g.nodes():
                if n in env:
                    continue
                fn = LOWERINGS.get(n.op.name) or unary.get(n.op.name)
                if isinstance(n.op, UserOp):
                    fn = _user
                if fn is None:
                    raise BackendError(f"no Relax lowering for op {n.op.name}",
                                       where=f"%{n.name}", loc=n.loc,
                                       hint="add it to nasir.backends.tvm.LOWERINGS")
                env[n] = fn(em, n, [env[i] for i in n.inputs], specs)
            out = env[g.output]
            if any(out is v for v in inputs):
                out = bb.emit(relax.op.add(out, relax.const(0.0, "float32")))
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    mod = bb.get()
    if em.inlined:
        mod = relax.transform.InlinePrivateFunctions()(mod)
        mod = relax.transform.DeadCodeElimination([func_name])(mod)
    return mod
