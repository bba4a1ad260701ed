"""Lower a concrete nasir graph straight to a Relax module (``BlockBuilder`` + ``relax.op``).

The graph is copied, verified and passed through ``expand_composites``; every primitive op
is then emitted as Relax ops with inference semantics (batch norm uses running statistics,
dropout is the identity). Inputs are batched NCHW (a batch dimension is added in front of
each per-sample type). Weights follow the naming shared by the backends
(``"N.weight"``, ``"N.bias"``, ``"N.running_mean"``, ``"N.running_var"`` for primitive
node ``%N`` after expansion, PyTorch layouts) and are either bound as constants — batch
norms then folded into the convolution or linear layer before them, in numpy
(:mod:`.relax_fold`), so that no constant arithmetic is left for TVM to fold — or left as
function parameters. A user op's module is imported through ``torch.export``
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

from collections.abc import Mapping
from typing import Any

import numpy as np

from nasir.backends.tvm.relax_fold import fold_batch_norms
from nasir.backends.tvm.relax_ops import LOWERINGS, _Emitter, _unary_table, _user
from nasir.backends.tvm.relax_weights import _check_weights, param_specs, random_weights
from nasir.errors import BackendError
from nasir.graph import Graph, Node
from nasir.ops import UserOp

__all__ = ["LOWERINGS", "lower", "param_specs", "prepare", "random_weights"]

_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64"}


def prepare(graph: Graph) -> Graph:
    """A verified copy of ``graph`` with composites expanded (the input is not changed):
    :func:`nasir.passes.prepare_for_lowering`, the same preparation as the torch backend's."""
    from nasir.passes import prepare_for_lowering

    return prepare_for_lowering(graph)


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
    folding = None
    if not bind_params:
        for k, shape in specs.items():
            pvars[k] = relax.Var("p_" + k.replace(".", "_"), relax.TensorType(shape, "float32"))
    else:
        folding = fold_batch_norms(g, weights)
    bound = folding.weights if folding is not None else weights

    def fetch(key: str, shape: tuple[int, ...], transpose: bool = False) -> Any:
        if key in pvars:
            v, has = pvars[key], specs[key]
            if transpose:
                v, has = bb.emit(relax.op.permute_dims(v)), has[::-1]
            return v if tuple(shape) == tuple(has) else bb.emit(relax.op.reshape(v, shape))
        arr = np.asarray(bound[key], dtype=np.float32)
        return relax.const(np.ascontiguousarray(arr.T if transpose else arr).reshape(shape))

    em = _Emitter(bb, batch, fetch, folding)
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
