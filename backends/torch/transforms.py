"""Low-fidelity graph rewrites for the estimator: channel width and input resolution.

>>> from nasir.spaces import get_space
>>> from nasir.passes import analyze
>>> sp = get_space("mnasnet", input_shape=(1, 8, 8), num_classes=10)
>>> g = sp.instantiate(sp.reference("mnasnet_b1"))
>>> half = scale_width(g, 0.5)
>>> analyze(half)["params"] < analyze(g)["params"] // 3
True
>>> set_resolution(g, 16).inputs[0].op.shape
(1, 16, 16)
"""

from __future__ import annotations

import dataclasses

from nasir.errors import BackendError
from nasir.graph import Graph
from nasir.ops import InputOp, Op
from nasir.passes import verify

__all__ = ["scale_width", "set_resolution"]


def _scaled(c: int, w: float, multiple: int = 1) -> int:
    return max(multiple, round(c * w / multiple) * multiple)


def _scale_op(op: Op, w: float) -> Op:
    changes: dict[str, int] = {}
    attrs = op.attrs()
    if isinstance(attrs.get("out_channels"), int):
        groups = attrs.get("groups", 1)
        multiple = 2 if op.name == "factorized_reduce" else (groups if groups > 1 else 1)
        changes["out_channels"] = _scaled(attrs["out_channels"], w, multiple)
    if isinstance(attrs.get("squeeze_channels"), int):
        changes["squeeze_channels"] = _scaled(attrs["squeeze_channels"], w)
    if isinstance(attrs.get("expand_channels"), int):
        changes["expand_channels"] = _scaled(attrs["expand_channels"], w)
    return dataclasses.replace(op, **changes) if changes else op


def scale_width(g: Graph, multiplier: float) -> Graph:
    """A copy of ``g`` with every conv / block width times ``multiplier`` (classifier kept).

    Grouped convolutions keep a multiple of their group count. The copy is verified; a
    width that breaks the graph raises ``BackendError``.
    """
    if not multiplier > 0:
        raise BackendError(f"width multiplier must be > 0, got {multiplier}")
    out = g.copy()
    if multiplier == 1.0:
        return out
    for n in out.nodes():
        new = _scale_op(n.op, multiplier)
        if new is not n.op:
            out.replace_op(n, new)
    out.clear_types()
    try:
        verify(out)
    except Exception as e:
        raise BackendError(f"width multiplier {multiplier} breaks graph @{g.name}: {e}",
                           hint="use a multiplier that keeps channel counts compatible") from e
    return out


def set_resolution(g: Graph, resolution: int) -> Graph:
    """A copy of ``g`` whose image inputs are ``resolution × resolution``."""
    out = g.copy()
    for n in out.inputs:
        op = n.op
        if isinstance(op, InputOp) and len(op.shape) == 3:
            out.replace_op(n, InputOp(shape=(op.shape[0], resolution, resolution),
                                      dtype=op.dtype))
    out.clear_types()
    try:
        verify(out)
    except Exception as e:
        raise BackendError(f"resolution {resolution} does not fit graph @{g.name}: {e}",
                           hint="use a larger resolution") from e
    return out
