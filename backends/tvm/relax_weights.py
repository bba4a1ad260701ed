"""The weights of a Relax lowering: their names and shapes (:func:`param_specs`, PyTorch
layouts in the naming shared by the backends), generated ones (:func:`random_weights`, user
modules by their own initialisation) and the check of given ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nasir.errors import BackendError, NasirError
from nasir.graph import Graph, Node
from nasir.ops import UserOp, pair

__all__ = ["param_specs", "random_weights"]


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

    >>> from nasir.passes import prepare_for_lowering
    >>> from nasir.text import parse_graph
    >>> g = prepare_for_lowering(parse_graph('''graph @g {
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
