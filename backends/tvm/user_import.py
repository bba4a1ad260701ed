"""User ops in Relax: the user's torch module through ``torch.export`` and TVM's importer.

A user op (:func:`nasir.ops.user_op`) is opaque to nasir, so its Relax code comes from
PyTorch: the module is wrapped as a pure function of its input and its floating-point
state tensors (``torch.func.functional_call``), exported with ``torch.export`` for the
batched input shape, and translated by ``tvm.relax.frontend.torch.from_exported_program``.
The result is a private Relax function ``(x, *state) -> y``; :func:`~.relax_lowering.lower`
calls it with the node's weights (constants or parameters, like every other weight) and
inlines it into ``main``. The translation depends only on the op, the input type and the
batch, so it is cached; weights never enter it.

>>> import torch
>>> from nasir.ops import user_op
>>> from nasir.types import TensorType
>>> Norm = user_op("doc_tvm_norm", module=lambda t: torch.nn.LayerNorm(list(t.shape)),
...                shape=lambda t: t.shape)
>>> fn, names = import_user_op(Norm(), TensorType((4, 2, 2)), batch=3)
>>> names, len(fn.params)  # (x, weight, bias)
(['weight', 'bias'], 3)
"""

from __future__ import annotations

from typing import Any

from nasir.errors import BackendError, NasirError
from nasir.ops import UserOp
from nasir.types import TensorType

__all__ = ["import_user_op"]

_CACHE: dict[tuple[Any, TensorType, int], tuple[Any, list[str]]] = {}
_TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64"}


def _functional(module: Any, names: list[str]) -> Any:
    import torch

    class Functional(torch.nn.Module):
        """``forward(x, *state)``: the module with ``state`` in place of its tensors."""

        def __init__(self) -> None:
            super().__init__()
            # not a submodule: its tensors must not become lifted parameters of the export
            object.__setattr__(self, "inner", module)

        def forward(self, x: Any, *state: Any) -> Any:
            inner: Any = self.inner
            return torch.func.functional_call(inner, dict(zip(names, state)), (x,))

    return Functional()


def import_user_op(op: UserOp, in_type: TensorType, batch: int) -> tuple[Any, list[str]]:
    """The private Relax function ``(x, *state) -> y`` of ``op`` on a batch of ``in_type``,
    and the state-dict names of ``state`` in order (cached per op, type and batch)."""
    import torch

    key = (op, in_type, batch)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    module = op.build_module(in_type, seed=0).eval()
    state = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
    names = list(state)
    dtype = getattr(torch, _TORCH_DTYPES.get(in_type.dtype, "float32"))
    x = torch.zeros((batch, *in_type.shape), dtype=dtype)
    try:
        with torch.no_grad():
            ep = torch.export.export(_functional(module, names), (x, *state.values()))
    except NasirError:
        raise
    except Exception as e:
        raise BackendError(f"user op {op.name}: torch.export cannot trace its module: "
                           f"{type(e).__name__}: {str(e).strip().splitlines()[0]}",
                           hint="the module must be traceable by torch.export (no data-"
                                "dependent control flow)") from None
    try:
        from tvm.relax.frontend.torch import from_exported_program

        mod = from_exported_program(ep, keep_params_as_input=False,
                                    unwrap_unit_return_tuple=True)
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise BackendError(f"user op {op.name}: TVM's Relax importer cannot translate its "
                           f"module: {type(e).__name__}: {lines[-1] if lines else ''}",
                           hint="use torch ops that tvm.relax.frontend.torch supports") from None
    fn = mod["main"].without_attr("global_symbol")
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (fn, names)
    return fn, names
