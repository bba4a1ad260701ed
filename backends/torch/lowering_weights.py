"""Weights into a lowered module: :func:`load_weights` (exact, by the ``N.weight`` naming
convention) and :func:`inherit_weights` (leading slices of a related, wider network's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from nasir.errors import BackendError

__all__ = ["inherit_weights", "load_weights"]


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
