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

from dataclasses import dataclass

from nasir.backends.torch.memory_measure import StepMeasurement, measure_training_step
from nasir.backends.torch.memory_sim import _gated, _Step, activation_profile
from nasir.backends.torch.memory_sim import _nbytes as _nbytes  # supernet/net.py imports it
from nasir.errors import BackendError
from nasir.graph import Graph, Node

__all__ = [
    "MemoryEstimate",
    "ResourceError",
    "StepMeasurement",
    "activation_profile",
    "check_memory",
    "measure_training_step",
    "predict_training_memory",
]

_OPT_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}


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
    total_w = sum(4 * n.op.params(tuple(i.ttype for i in n.inputs), n.ttype)
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
