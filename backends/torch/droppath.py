"""Drop-path for cell networks and NASNet's ScheduledDropPath.

The IR marks cells only by structure, so drop-path uses a structural rule: **an operand of
an ``add`` with two or more operands is dropped when it is computed by a real op (not
``identity``, ``zero`` or a graph input) and that ``add`` is its only user.** In a cell
(NAS-Bench-201, DARTS, NASNet) those operands are exactly the edge ops summed into a cell
node — skip edges are identities and stay; in a residual block (MBConv, ResNet) the branch
is dropped and the shortcut (which has other users) kept, which is stochastic depth.

Dropping multiplies a whole sample's operand by 0, or by ``1 / (1 - p)`` when kept, while
training; at inference it is the identity. ``lower(g, drop_path=True)`` inserts one shared
:class:`DropPath` module called ``drop_path``; :class:`ScheduledDropPath` raises its
probability linearly over training (NASNet: ``p = p_max · epoch / epochs``).

>>> import torch
>>> m = DropPath(0.5).train()
>>> y = m(torch.ones(1000, 1, 1, 1))
>>> sorted({round(v, 1) for v in y.flatten().tolist()})
[0.0, 2.0]
>>> DropPath(0.5).eval()(torch.ones(2, 3)).tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nasir.errors import BackendError
from nasir.graph import Graph, Node

__all__ = ["DropPath", "ScheduledDropPath", "drop_path_operands"]

_PASSTHROUGH = ("identity", "zero", "input")


class DropPath(nn.Module):
    """Per-sample path dropping with probability ``p`` (a plain attribute, no weights)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_operands(g: Graph) -> dict[Node, list[int]]:
    """For each ``add`` of an expanded graph, the positions of the operands to drop."""
    users: dict[Node, int] = {}
    for n in g.nodes():
        for i in n.inputs:
            users[i] = users.get(i, 0) + 1
    if g.output in users:
        users[g.output] += 1
    out: dict[Node, list[int]] = {}
    for n in g.nodes():
        if n.op.name != "add" or len(n.inputs) < 2:
            continue
        pos = [k for k, i in enumerate(n.inputs)
               if i.op.name not in _PASSTHROUGH and users.get(i, 0) == 1]
        if pos:
            out[n] = pos
    return out


@dataclass
class ScheduledDropPath:
    """NASNet's ScheduledDropPath: the drop probability grows linearly to ``p_max``.

    >>> s = ScheduledDropPath(0.3)
    >>> s.probability(0, 10), s.probability(5, 10), s.probability(10, 10)
    (0.0, 0.15, 0.3)
    """

    p_max: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_max < 1.0:
            raise BackendError(f"drop-path probability {self.p_max} is outside [0, 1)",
                               hint="use e.g. 0.2")

    def probability(self, epoch: int, epochs: int) -> float:
        """Drop probability for (0-based) ``epoch`` of ``epochs``."""
        return self.p_max * min(1.0, epoch / max(1, epochs))

    def update(self, module: nn.Module, epoch: int, epochs: int) -> float:
        """Set every ``DropPath`` in ``module`` for ``epoch``; returns the probability."""
        p = self.probability(epoch, epochs)
        for m in module.modules():
            if isinstance(m, DropPath):
                m.p = p
        return p
