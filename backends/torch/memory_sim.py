"""The simulation behind :func:`~nasir.backends.torch.memory.predict_training_memory`: what
autograd saves per op (``_SAVES_INPUT``, ``_SAVES_OUTPUT``, views, supernets' mixing
``mul``), the static per-node summary :func:`activation_profile`, and ``_Step``, which
replays one forward and backward tensor by tensor and keeps the peak. The model is described
in :mod:`~nasir.backends.torch.memory`.
"""

from __future__ import annotations

import itertools
from typing import Any

from nasir.graph import Graph, Node
from nasir.ops import UserOp

__all__ = ["activation_profile"]

_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i64": 8}
_SAVES_INPUT = ("conv2d", "depthwise_conv2d", "linear", "batch_norm", "max_pool2d",
                "avg_pool2d", "relu6", "hardswish", "swish", "hardsigmoid")
_SAVES_OUTPUT = ("relu", "sigmoid")
_VIEWS = ("identity", "flatten", "crop")


def _nbytes(n: Node) -> int:
    t: Any = n.type
    return int(t.numel * _BYTES.get(t.dtype, 4))


def _grad_live(g: Graph) -> set[Node]:
    """Nodes on a differentiable path to the output (``zero`` cuts the path)."""
    live = {g.output}
    for n in reversed(g.nodes()):
        if n in live and n.op.name != "zero":
            live.update(n.inputs)
    return live


def _gated(graph: Graph, g: Graph) -> set[Node]:
    """Nodes of ``g`` (``graph`` expanded) that carry the value of a node of ``graph``
    tagged ``mix_out``. A tagged composite node loses its tag in expansion: its value is
    the node of its expansion used outside it (or the output)."""
    tagged = {n.name for n in graph.nodes() if (n.meta or {}).get("mix_out")}
    if not tagged:
        return set()
    origin = {n: (n.meta or {}).get("origin", n.name) for n in g.nodes()}
    out = {n for n in g.nodes() if n.name in tagged}
    for n in g.nodes():
        for i in n.inputs:
            if origin[i] in tagged and origin[i] != origin[n]:
                out.add(i)
    if origin[g.output] in tagged:
        out.add(g.output)
    return out


def activation_profile(g: Graph, *, arch_grad: bool = False,
                       gated: set[Node] | frozenset[Node] = frozenset()
                       ) -> tuple[list[int], list[int], int]:
    """Per node of an expanded, typed graph (graph order): bytes per sample of the values
    first saved for backward by that node, and bytes of its weights; plus the two largest
    activations per sample, summed (a crude bound on the transient). A static summary
    for inspection: :func:`predict_training_memory` simulates lifetimes instead.

    Supernet graphs: a ``mul`` tagged ``mix_weight`` stands for ``o · w`` with a mixing
    weight ``w``; autograd saves ``o`` only when ``w`` requires grad (``arch_grad``).
    With ``arch_grad``, the values in ``gated`` (binarized mode's sampled outputs) are
    saved by the straight-through gate."""
    live = _grad_live(g)
    base: dict[Node, Node] = {}
    for n in g.nodes():
        base[n] = base[n.inputs[0]] if n.op.name in _VIEWS else n
    seen: set[Node] = set()
    saved: list[int] = []
    weights: list[int] = []
    sizes = [0, 0]
    for n in g.nodes():
        name = n.op.name
        ins = tuple(i.ttype for i in n.inputs)
        weights.append(4 * n.op.params(ins, n.ttype))
        if name not in _VIEWS and name != "input":
            sizes.append(_nbytes(n))
        if n not in live:
            saved.append(0)
            continue
        new: list[Node] = []
        if name in _SAVES_INPUT or isinstance(n.op, UserOp):
            new.append(base[n.inputs[0]])
        elif name in _SAVES_OUTPUT:
            new.append(base[n])
        elif name == "mul" and (arch_grad or not (n.meta or {}).get("mix_weight")):
            new.extend(base[i] for i in n.inputs)
        if arch_grad and n in gated:
            new.append(base[n])
        extra = 0
        if name == "dropout" and getattr(n.op, "p", 0) > 0:
            extra += n.ttype.numel
        if name == "max_pool2d":
            extra += 8 * n.ttype.numel
        fresh = [v for v in dict.fromkeys(new) if v not in seen]
        seen.update(fresh)
        saved.append(sum(_nbytes(v) for v in fresh) + extra)
    sizes.sort(reverse=True)
    return saved, weights, sizes[0] + sizes[1]


# backward hands the output's gradient (or views of it) to the inputs: no new tensor
_PASS_GRAD = ("add", "identity", "flatten", "concat")
# extra bytes per output element an op keeps for backward (dropout mask, max-pool indices)
_EXTRA = {"dropout": 1, "max_pool2d": 8}


def _mix(n: Node) -> bool:
    return bool((n.meta or {}).get("mix_weight"))


class _Step:
    """Tensor lifetimes of one training step of an expanded, typed graph (see the module
    docstring). :meth:`run` returns ``(peak, saved, grads, other)``: the peak bytes above
    the resident weights and its split into activations saved for backward, weight
    gradients, and the rest (forward values still to be read, activation gradients)."""

    def __init__(self, g: Graph, batch: int, arch_grad: bool,
                 gated: set[Node] | frozenset[Node], frac: float) -> None:
        self.g, self.batch, self.arch_grad, self.gated = g, batch, arch_grad, gated
        self.nodes = g.nodes()
        self.live = _grad_live(g)
        self.base: dict[Node, Node] = {}
        self.rg: dict[Node, bool] = {}  # the output requires grad
        self.weights: list[int] = []
        for n in self.nodes:
            name = n.op.name
            self.base[n] = self.base[n.inputs[0]] if name in _VIEWS else n
            w = 4 * n.op.params(tuple(i.ttype for i in n.inputs), n.ttype)
            self.weights.append(int(frac * w))
            if name in ("input", "zero"):
                self.rg[n] = False
            elif _mix(n):
                self.rg[n] = self.rg[n.inputs[0]] or arch_grad
            else:
                self.rg[n] = w > 0 or any(self.rg[i] for i in n.inputs)
        self.saved = self.other = self.grads = 0
        self.peak = (0, 0, 0, 0)
        self.refs: dict[int, int] = {}
        self.tsize: dict[int, int] = {}
        self.ids = itertools.count()

    def size(self, n: Node) -> int:
        return 0 if n.op.name == "input" else self.batch * _nbytes(n)

    def mark(self) -> None:
        total = self.saved + self.other + self.grads
        if total > self.peak[0]:
            self.peak = (total, self.saved, self.grads, self.other)

    def lifetimes(self) -> None:
        """``last``: index of each value's last forward read (the output: the loss's).
        ``held``: for a node off the gradient path (reaching the loss only through
        ``zero``), when the last tensor whose autograd graph holds its node dies."""
        nodes, base = self.nodes, self.base
        self.last: dict[Node, int] = {}
        for k, n in enumerate(nodes):
            self.last.setdefault(base[n], k)
            for i in n.inputs:
                self.last[base[i]] = k
        self.last[base[self.g.output]] = len(nodes)
        pos = {n: k for k, n in enumerate(nodes)}
        users: dict[Node, list[Node]] = {}
        for n in nodes:
            for i in n.inputs:
                users.setdefault(i, []).append(n)
        self.held: dict[int, int] = {}
        for k in range(len(nodes) - 1, -1, -1):
            n = nodes[k]
            if n not in self.live and self.rg[n]:
                self.held[k] = max([self.last[base[n]]] + [
                    self.held[pos[u]] for u in users.get(n, ()) if pos[u] in self.held])

    def savers(self) -> None:
        """Which node saves which value (autograd records ops whose output requires
        grad), and the extra bytes (mask, indices) each keeps."""
        base = self.base
        self.saved_by: dict[Node, set[int]] = {}
        self.extra = [0] * len(self.nodes)
        for k, n in enumerate(self.nodes):
            if not self.rg[n]:
                continue
            name = n.op.name
            new: list[Node] = []
            if name in _SAVES_INPUT or isinstance(n.op, UserOp):
                new.append(base[n.inputs[0]])
            elif name in _SAVES_OUTPUT:
                new.append(base[n])
            elif name == "mul" and (self.arch_grad or not _mix(n)):
                new.extend(base[i] for i in n.inputs)
            if self.arch_grad and n in self.gated:
                new.append(base[n])
            for v in new:
                self.saved_by.setdefault(v, set()).add(k)
            if name in _EXTRA and (name != "dropout" or getattr(n.op, "p", 0) > 0):
                self.extra[k] = _EXTRA[name] * self.batch * n.ttype.numel

    def forward(self) -> None:
        """Each output allocated, freed after its last read unless saved; values saved
        only by nodes off the gradient path are freed when those nodes are."""
        held, saved_by = self.held, self.saved_by
        self.keep = {v for v, s in saved_by.items() if any(k not in held for k in s)}
        dies: dict[int, list[Node]] = {}
        for v, k in self.last.items():
            if v in self.keep:
                continue
            if v in saved_by:
                k = max([k] + [held[j] for j in saved_by[v]])
            dies.setdefault(k, []).append(v)
        dead_extra: dict[int, int] = {}
        for k, t in held.items():
            dead_extra[t] = dead_extra.get(t, 0) + self.extra[k]
        for k in range(len(self.nodes) + 1):
            if k < len(self.nodes):
                n = self.nodes[k]
                if self.base[n] is n:
                    if n in saved_by:
                        self.saved += self.size(n)
                    else:
                        self.other += self.size(n)
                self.saved += self.extra[k]
                self.mark()
            for v in dies.get(k, ()):
                if v in saved_by:
                    self.saved -= self.size(v)
                else:
                    self.other -= self.size(v)
            self.saved -= dead_extra.get(k, 0)

    def alloc(self, nbytes: int) -> int:
        t = next(self.ids)
        self.refs[t], self.tsize[t] = 1, nbytes
        self.other += nbytes
        return t

    def drop(self, t: int) -> None:
        self.refs[t] -= 1
        if not self.refs[t]:
            self.other -= self.tsize.pop(t)

    def backward_node(self, n: Node, gout: int, buf: dict[Node, int]) -> None:
        """Gradients of ``n``'s inputs: shared (pass-through ops) or new; a second one is
        added in place into an unshared buffer, else out of place."""
        for i in dict.fromkeys(n.inputs) if _mix(n) else n.inputs:
            if not self.rg[i] or i not in self.live:
                continue
            if n.op.name in _PASS_GRAD:
                gi = gout
                self.refs[gi] += 1
            else:
                gi = self.alloc(self.batch * _nbytes(i))
            old = buf.get(i)
            if old is None:
                buf[i] = gi
            elif self.refs[old] == 1:
                self.drop(gi)  # old += gi
            else:
                t = self.alloc(self.batch * _nbytes(i))
                self.mark()
                self.drop(old)
                self.drop(gi)
                buf[i] = t

    def backward(self) -> None:
        """Reverse graph order (autograd runs nodes by decreasing sequence number): an
        op's output gradient is freed after it ran, a saved value after the last op that
        saved it; weight gradients accumulate."""
        buf: dict[Node, int] = {self.g.output: self.alloc(self.size(self.g.output))}
        pending = {v: {k for k in s if k not in self.held}
                   for v, s in self.saved_by.items() if v in self.keep}
        by_node: dict[int, list[Node]] = {}
        for v, s in pending.items():
            for k in s:
                by_node.setdefault(k, []).append(v)
        for k in range(len(self.nodes) - 1, -1, -1):
            n = self.nodes[k]
            gout = buf.pop(n, None)
            if gout is not None and self.rg[n]:
                self.backward_node(n, gout, buf)
                self.grads += self.weights[k]
                self.mark()
            if gout is not None:
                self.drop(gout)
            if k not in self.held:
                self.saved -= self.extra[k]
            for v in by_node.get(k, ()):
                pending[v].discard(k)
                if not pending[v]:
                    self.saved -= self.size(v)

    def run(self) -> tuple[int, int, int, int]:
        self.lifetimes()
        self.savers()
        self.forward()
        self.backward()
        return self.peak
