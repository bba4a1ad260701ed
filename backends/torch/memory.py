"""Training-memory prediction from the IR's typed shapes, a budget check, and measurement.

**Model.** One training step (forward, backward, optimizer update) is simulated tensor by
tensor from the expanded graph's typed shapes (:func:`predict_training_memory`); the peak
of the simulated bytes, plus the resident weights, buffers and optimizer state (SGD 0,
momentum 1, Adam 2 copies of the weights), is the prediction. What the simulation follows
is what autograd and the CPU allocator do:

* forward, in graph order: every op's output is allocated (views -- ``flatten``, ``crop``,
  ``identity`` -- share their base) and freed after its last use, unless autograd saved
  it for backward. Saved, per op whose output requires grad and reaches the loss: the
  input of conv / linear / batch-norm / pooling / relu6 / hardswish / swish /
  hardsigmoid, the output of relu and sigmoid, both operands of ``mul``, dropout's byte
  mask and max-pool's int64 indices; a user op (opaque) is assumed to save its input,
  as LayerNorm and GELU do (attention saves more). A value saved by several ops counts
  once; a value whose only way to the output goes through ``zero`` dies with its graph;
* supernets: a candidate's output times its mixing weight (a ``mul`` tagged
  ``mix_weight`` in :meth:`Supernet.mixed_graph`, emitted in the forward's order:
  candidate, product, running sum) is a new tensor; it keeps the candidate's output
  alive for backward *only when the logits require grad* (``arch_grad``), otherwise
  the output is freed at once. Likewise binarized mode's straight-through gate keeps the
  sampled output only when the logits train. Frozen logits (a weight step) therefore
  cost no more than the candidates' own saved inputs;
* backward, in reverse graph order (autograd runs nodes by decreasing sequence number):
  each op allocates its inputs' gradients (``add``, views and ``concat`` pass the
  output's gradient on, shared), a second gradient is added in place into an unshared
  buffer and out of place into a shared one, an op's output gradient is freed after it
  ran, a saved value after the last op that saved it, and weight gradients accumulate;
* update: SGD in place; Adam's step needs one weight-sized temporary.

**Measurement** (:func:`measure_training_step`): the PyTorch profiler records every
allocation and free of the CPU allocator with its size; the running sum of those events
over one step gives the step's peak above what was resident before it, to which the
resident weights are added. It counts tensor bytes handed out by the allocator (what the
model predicts), not the process RSS, which allocator caching and fragmentation blur.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
>>> est = predict_training_memory(sp.instantiate(sp.reference("resnet")), batch_size=8)
>>> est.total == est.weights + est.gradients + est.optimizer + est.activations + est.transient
True
>>> try:
...     check_memory(est, budget_bytes=1000)
... except ResourceError as e:
...     print(e.message.startswith("predicted training memory"), "exceeds" in e.message)
True True
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nasir.errors import BackendError
from nasir.graph import Graph, Node
from nasir.ops import UserOp

__all__ = [
    "MemoryEstimate",
    "ResourceError",
    "activation_profile",
    "check_memory",
    "measure_training_step",
    "predict_training_memory",
]

_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i64": 8}
_OPT_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}
_SAVES_INPUT = ("conv2d", "depthwise_conv2d", "linear", "batch_norm", "max_pool2d",
                "avg_pool2d", "relu6", "hardswish", "swish", "hardsigmoid")
_SAVES_OUTPUT = ("relu", "sigmoid")
_VIEWS = ("identity", "flatten", "crop")


class ResourceError(BackendError):
    """A network will not fit the given resources (memory budget)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes of one training step, by component."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        """Sum of all components."""
        return self.weights + self.gradients + self.optimizer + self.activations + \
            self.transient

    def __str__(self) -> str:
        mib = 1 << 20
        return (f"{self.total / mib:.1f} MiB (weights {self.weights / mib:.1f}, grads "
                f"{self.gradients / mib:.1f}, optimizer {self.optimizer / mib:.1f}, "
                f"activations {self.activations / mib:.1f}, transient "
                f"{self.transient / mib:.1f})")


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
        ins = tuple(i.type for i in n.inputs)
        weights.append(4 * n.op.params(ins, n.type))  # type: ignore[arg-type]
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
            extra += n.type.numel  # type: ignore[union-attr]
        if name == "max_pool2d":
            extra += 8 * n.type.numel  # type: ignore[union-attr]
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
            w = 4 * n.op.params(tuple(i.type for i in n.inputs), n.type)  # type: ignore[arg-type,misc]
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
                self.extra[k] = _EXTRA[name] * self.batch * n.type.numel  # type: ignore[union-attr]

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


def predict_training_memory(graph: Graph, batch_size: int, optimizer: str = "sgd",
                            *, trainable_fraction: float = 1.0,
                            arch_grad: bool = False) -> MemoryEstimate:
    """Predict the peak memory of one training step of ``graph`` at ``batch_size``.

    The step is simulated tensor by tensor from the typed shapes: the forward in graph
    order (each output allocated, freed after its last use unless autograd saved it),
    then the backward in reverse order (gradients of the activations allocated and freed,
    saved activations released after the last node that saved them, weight gradients
    accumulating), then the update (Adam's step needs one weight-sized temporary). The
    peak is the prediction. ``optimizer`` is ``sgd``, ``momentum`` or ``adam``.
    ``trainable_fraction`` scales the gradient and optimizer terms. ``arch_grad``: for a
    supernet's graph (:meth:`Supernet.mixed_graph` / ``child_graph``), whether the
    architecture logits require grad (see :func:`activation_profile`).
    """
    from nasir.backends.torch.lowering import prepare

    if optimizer not in _OPT_COPIES:
        raise BackendError(f"unknown optimizer {optimizer!r} for memory prediction",
                           hint=f"use one of {', '.join(_OPT_COPIES)}")
    if batch_size < 1:
        raise BackendError(f"batch size must be >= 1, got {batch_size}")
    g = prepare(graph)
    buffers = sum(2 * 4 * n.shape[0] for n in g.nodes()
                  if n.op.name == "batch_norm")
    total_w = sum(4 * n.op.params(tuple(i.type for i in n.inputs), n.type)  # type: ignore[arg-type]
                  for n in g.nodes())
    frac = trainable_fraction
    gated: set[Node] = _gated(graph, g) if arch_grad else set()
    peak, saved, grads, other = _Step(g, batch_size, arch_grad, gated, frac).run()
    update = int(frac * total_w) * (2 if optimizer == "adam" else 1)  # grads + temporary
    if update > peak:
        saved, grads, other = 0, int(frac * total_w), update - int(frac * total_w)
    return MemoryEstimate(
        weights=total_w + buffers,
        gradients=grads,
        optimizer=_OPT_COPIES[optimizer] * int(frac * total_w),
        activations=saved,
        transient=other,
    )


def check_memory(estimate: MemoryEstimate, budget_bytes: int, what: str = "network") -> None:
    """Raise ``ResourceError`` when ``estimate`` does not fit ``budget_bytes``."""
    if estimate.total > budget_bytes:
        raise ResourceError(
            f"predicted training memory {estimate.total:,} B of this {what} exceeds the "
            f"budget of {budget_bytes:,} B",
            where=str(estimate),
            hint="lower the batch size, the resolution or the width, or use a binarized / "
                 "single-path supernet mode instead of DARTS",
        )


@dataclass(frozen=True)
class StepMeasurement:
    """Measured bytes: ``resident`` before the step, ``peak`` during it, and seconds."""

    resident: int
    step_peak: int
    seconds: float

    @property
    def total(self) -> int:
        """Resident plus the step's peak of new allocations."""
        return self.resident + self.step_peak


def _alloc_peak(prof: Any) -> int:
    from torch._C._profiler import _EventType

    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        n = stack.pop()
        if n.tag == _EventType.Allocation:
            events.append((n.start_time_ns, n.extra_fields.alloc_size))
        stack.extend(n.children)
    events.sort()
    cur = peak = 0
    for _, b in events:
        cur += b
        peak = max(peak, cur)
    return peak


def measure_training_step(module: torch.nn.Module, step: Callable[[], Any]) -> StepMeasurement:
    """Run ``step()`` (forward, backward, update) under the profiler's memory recording.

    ``resident`` is the bytes of ``module``'s parameters and buffers (already allocated).
    Set gradients to ``None`` before calling: the profiler does not see frees of blocks
    allocated before it started, so freeing old gradients inside ``step`` would be missed.
    """
    from torch.profiler import ProfilerActivity, profile

    resident = sum(t.numel() * t.element_size() for t in module.parameters())
    resident += sum(t.numel() * t.element_size() for t in module.buffers())
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return StepMeasurement(resident, _alloc_peak(prof), time.perf_counter() - t0)
