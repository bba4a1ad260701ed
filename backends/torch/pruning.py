"""Filter pruning of a concrete network: channel groups, width rewrites, L2-norm surgery.

NetAdapt (Yang et al., ECCV 2018) shrinks one layer at a time: it picks how many filters a
layer keeps, keeps those of largest L2 norm, and hands the next layer the matching input
channels. On nasir's IR a *layer* is a **channel group** of a primitive graph (composites
expanded, :func:`~nasir.backends.torch.lowering.prepare`): the tensors that share one
channel axis. A group starts at its *sources* (``conv2d`` with ``groups=1``, ``linear``:
their filters are the channels) and runs through ops that keep channels one to one
(batch norm, activations, pooling, depthwise convolutions, dropout, crop/pad); ``add`` and
``mul`` tie their operands into one group (a residual add, an SE gate), so tied layers
shrink together. *Consumers* (``conv2d``/``linear`` reading the group) lose the matching
input channels.

A group is not prunable when it reaches the graph output (the classifier's classes), an
input, a ``concat``, a grouped conv or depthwise multiplier, a flatten of a map larger
than 1×1, or an op this module does not know (user ops); such groups are left out.

Rewriting widths (:func:`set_widths`) changes only the sources' ``out_channels`` /
``out_features``; shape inference carries the width on (depthwise channels, batch norms,
the next layer's input channels), and the copy is verified. Node names are kept, so the
lowered module's state-dict keys (``"N.weight"``) name the same layers before and after:
:func:`select_filters` ranks a group's filters by L2 norm and :func:`prune_state` slices a
state dict to the kept ones (sources' filters and biases, the group's depthwise filters and
batch-norm parameters and running statistics, consumers' input channels).

>>> from nasir.passes import verify
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[1, 4, 4]}
...   %1 = conv2d(%x) {out_channels=8}
...   %2 = batch_norm(%1)
...   %3 = relu(%2)
...   %4 = depthwise_conv2d(%3)
...   %5 = conv2d(%4) {out_channels=6, kernel=1}
...   %6 = global_avg_pool(%5) {keepdims=false}
...   %7 = linear(%6) {out_features=3}
...   return %7
... }''')
>>> verify(g)
>>> [(c.name, c.width, c.channelwise, c.consumers) for c in channel_groups(g)]
[('1', 8, ('2', '4'), ('5',)), ('5', 6, (), ('7',))]
>>> print(set_widths(g, {"1": 4}).text(types=True).splitlines()[5])
  %4 = depthwise_conv2d(%3) : f32[4,4,4]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from nasir.errors import BackendError, NasirError
from nasir.graph import Graph, Node
from nasir.ops import Conv2dOp, DepthwiseConv2dOp, LinearOp

__all__ = ["ChannelGroup", "channel_groups", "filter_norms", "prune_state", "select_filters",
           "set_widths"]

#: ops whose output channel ``c`` is a function of input channel ``c`` alone
_SAME = ("batch_norm", "relu", "relu6", "hardswish", "swish", "sigmoid", "hardsigmoid",
         "identity", "zero", "dropout", "max_pool2d", "avg_pool2d", "global_avg_pool",
         "crop", "pad")
#: of those, the ops with per-channel weights (dimension 0 of every tensor)
_CHANNELWISE = ("batch_norm", "depthwise_conv2d")


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable layer: node names of a primitive graph sharing one channel axis.

    ``name`` is the first source's node name; ``width`` its channel count in the graph
    the group was read from; ``sources`` make the channels (their filters are pruned),
    ``channelwise`` carry per-channel weights (batch norms, depthwise convolutions),
    ``consumers`` read the channels as input channels.
    """

    name: str
    width: int
    sources: tuple[str, ...]
    channelwise: tuple[str, ...]
    consumers: tuple[str, ...]


def _channels(n: Node) -> int:
    return n.shape[0]


class _Groups:
    """Union-find over nodes (each node's output tensor), with a 'fixed' mark."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.fixed: set[str] = set()

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def fix(self, *names: str) -> None:
        self.fixed.update(names)


def _same_channels(n: Node) -> bool:
    op = n.op.name
    if isinstance(n.op, DepthwiseConv2dOp):
        return n.op.multiplier == 1
    if op == "flatten":
        shape = n.inputs[0].shape
        return len(shape) == 1 or all(s == 1 for s in shape[1:])
    if op in ("add", "mul"):
        return all(_channels(i) == _channels(n) for i in n.inputs)
    return op in _SAME


def _is_source(n: Node) -> bool:
    return isinstance(n.op, LinearOp) or (isinstance(n.op, Conv2dOp) and n.op.groups == 1)


def channel_groups(g: Graph) -> list[ChannelGroup]:
    """The prunable channel groups of a typed primitive graph, in graph order.

    Raises ``BackendError`` for a graph with composite or untyped nodes (prepare it first:
    :func:`~nasir.backends.torch.lowering.prepare`).
    """
    uf = _Groups()
    consumers: list[tuple[str, str]] = []  # (consumer, the node it reads)
    for n in g.nodes():
        if n.op.composite or n.type is None:
            raise BackendError(f"channel_groups needs a typed primitive graph; %{n.name} "
                               f"({n.op.name}) is {'composite' if n.op.composite else 'untyped'}",
                               hint="prepare it: nasir.backends.torch.lowering.prepare(g)")
        uf.find(n.name)
        if _is_source(n):
            consumers.append((n.name, n.inputs[0].name))
        elif n.inputs and _same_channels(n):
            for i in n.inputs:
                uf.union(n.name, i.name)
        else:  # inputs, concat, grouped convs, user ops…: neither side may change
            uf.fix(n.name, *(i.name for i in n.inputs))
    uf.fix(g.output.name)
    fixed = {uf.find(a) for a in uf.fixed}
    members: dict[str, list[Node]] = {}
    for n in g.nodes():
        members.setdefault(uf.find(n.name), []).append(n)
    readers: dict[str, list[str]] = {}
    for c, src in consumers:
        readers.setdefault(uf.find(src), []).append(c)
    out = []
    for root, ns in members.items():
        sources = tuple(n.name for n in ns if _is_source(n))
        if root in fixed or not sources:
            continue
        out.append(ChannelGroup(sources[0], _channels(ns[0]), sources,
                                tuple(n.name for n in ns if n.op.name in _CHANNELWISE),
                                tuple(readers.get(root, ()))))
    return out


def set_widths(g: Graph, widths: Mapping[str, int],
               groups: Sequence[ChannelGroup] | None = None) -> Graph:
    """A verified copy of ``g`` whose channel groups named in ``widths`` have those widths.

    ``groups``: the graph's groups if already read (:func:`channel_groups`; names and
    members do not depend on widths). An unknown group, a width below 1 or a graph that no
    longer verifies raises ``BackendError``.
    """
    from nasir.passes import verify

    by_name = {c.name: c for c in (groups if groups is not None else channel_groups(g))}
    out = g.copy()
    for name, k in widths.items():
        if name not in by_name:
            raise BackendError(f"no prunable channel group {name!r} in graph @{g.name}",
                               hint=f"groups: {', '.join(by_name) or 'none'}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BackendError(f"width of group {name!r} must be an int >= 1, got {k!r}")
        for s in by_name[name].sources:
            n = out.node(s)
            field = "out_features" if n.op.name == "linear" else "out_channels"
            out.replace_op(n, dataclasses.replace(n.op, **{field: k}))
    out.clear_types()
    try:
        verify(out)
    except NasirError as e:
        raise BackendError(f"widths {dict(widths)} break graph @{g.name}: {e.message}",
                           hint="a width must fit every layer of its group") from None
    return out


def filter_norms(state: Mapping[str, torch.Tensor], group: ChannelGroup) -> torch.Tensor:
    """Per channel of ``group``, the L2 norm of its filters: over every source, the
    filter's weights (biases excluded, as NetAdapt's code); tied sources add their squares,
    the norm of the channel's filters taken together."""
    sq = None
    for s in group.sources:
        w = state[f"{s}.weight"].detach().double()
        part = (w * w).reshape(w.shape[0], -1).sum(1)
        sq = part if sq is None else sq + part
    if sq is None:
        raise BackendError(f"channel group {group.name!r} has no source layer")
    return sq.sqrt()


def select_filters(state: Mapping[str, torch.Tensor], group: ChannelGroup, k: int
                   ) -> list[int]:
    """The ``k`` channels of ``group`` with the largest filter norm (:func:`filter_norms`),
    in increasing channel order; equal norms keep the lower channel.

    >>> import torch
    >>> g = ChannelGroup("1", 3, ("1",), (), ())
    >>> w = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0]])
    >>> select_filters({"1.weight": w}, g, 2)
    [1, 2]
    """
    norms = filter_norms(state, group)
    if not 1 <= k <= len(norms):
        raise BackendError(f"cannot keep {k} of the {len(norms)} filters of group "
                           f"{group.name!r}")
    order = sorted(range(len(norms)), key=lambda c: (-float(norms[c]), c))
    return sorted(order[:k])


def prune_state(state: Mapping[str, torch.Tensor], group: ChannelGroup,
                keep: Sequence[int]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` (a lowered module's state dict) with ``group`` cut to the
    channels ``keep``: sources' filters and biases, the group's batch-norm parameters and
    running statistics and depthwise filters (dimension 0), consumers' input channels
    (dimension 1). Other tensors are shared, not copied."""
    idx = torch.as_tensor(list(keep), dtype=torch.long)
    out = dict(state)

    def cut(key: str, dim: int) -> None:
        if key in out:
            out[key] = out[key].index_select(dim, idx).clone()

    for name in (*group.sources, *group.channelwise):
        for p in ("weight", "bias", "running_mean", "running_var"):
            cut(f"{name}.{p}", 0)
    for name in group.consumers:
        cut(f"{name}.weight", 1)
    return out
