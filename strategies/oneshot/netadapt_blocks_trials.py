"""``netadapt_blocks`` through the runner: the per-block variant's proposals as trials.

The variant (:mod:`.netadapt_blocks`, not the paper's method) shrinks a space's numeric
width decisions, so its proposals are already assignments of the user's space — no derived
space. The loop is :class:`~.netadapt_trials.NetAdapt`'s (a ``pretrain`` trial, then per
iteration one ``short_term`` trial per width decision that can shrink, the most accurate
kept) with the variant's rules:

- a proposal is the largest smaller option of one decision that lowers the predicted
  latency by at least ``step`` (``step_ms``, default a quarter of the way to the budget,
  times ``step_decay`` per iteration), else the smallest option tried;
- it starts from the current network's weights *as they are*: the training estimator's
  ``inherit_weights`` keeps a narrowed layer's first filters (the paper keeps those of
  largest L2 norm); ``inherit=False`` trains proposals from scratch;
- fine-tuning (``finetune_epochs``) uses the run's training settings; no long-term trial.

>>> from nasir.spaces import get_space
>>> sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
>>> s = NetAdaptBlocks(sp, budget_ms=0.2, latency="macs", decisions=["b4_filters"])
>>> a = s.propose(1)[0]; s.feedback(a, {"status": "ok", "accuracy": 0.5})
>>> [(t["layer"], t["was"], t["filters"]) for t in s.queue]
[('b4_filters', 64, 48)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasir.space import Assignment, Space
from nasir.strategies.oneshot.netadapt_blocks import width_decisions
from nasir.strategies.oneshot.netadapt_trials import NetAdapt

__all__ = ["NetAdaptBlocks"]


class NetAdaptBlocks(NetAdapt):
    """Registry ``netadapt_blocks`` under the runner (module docstring). ``decisions``: the
    width decisions to shrink (default every numeric ``*filters*`` / ``*width*`` one);
    ``start``: a reference name or an assignment (default: the widest option of those
    decisions, the first of the others)."""

    name: ClassVar[str] = "netadapt_blocks"
    derives_space: ClassVar[bool] = False
    title: ClassVar[str] = "NetAdapt (per-block variant)"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 budget_ms: float, decisions: Sequence[str] | None = None,
                 start: str | Mapping[str, Any] | None = None, step_ms: float | None = None,
                 step_decay: float = 0.98, finetune_epochs: int = 1,
                 pretrain_epochs: int = 5, inherit: bool = True, max_iters: int = 20,
                 latency: str = "lut", lut: Any = None, latency_fn: Any = None,
                 device: str | None = None) -> None:
        super().__init__(space, seed, objective, budget_ms=budget_ms, latency=latency,
                         lut=lut, latency_fn=latency_fn, max_iters=max_iters,
                         short_term_epochs=finetune_epochs, long_term_epochs=0,
                         pretrain_epochs=pretrain_epochs, train={}, device=device)
        self.names = width_decisions(space, decisions)
        self.start, self.step_ms, self.step_decay = start, step_ms, float(step_decay)
        self.inherit = bool(inherit)
        self.train.clear()  # the run's training settings (the variant fine-tunes with them)

    def start_assignment(self) -> Assignment:
        """``start``, else the widest option of every width decision (first of others)."""
        if isinstance(self.start, str):
            return self.space.reference(self.start)
        if self.start is not None:
            return self.space.check(self.start, where="netadapt_blocks start")
        return self.space.check({d.label: max(d.options) if d.label in self.names
                                 else d.options[0] for d in self.space.decisions})

    def _iterate(self) -> None:
        cur = self.current
        assert cur is not None
        it = len(self.iterations) + 1
        lat = cur["latency_table_ms"]
        if lat <= self.budget or it > self.max_iters:
            self.stop = "budget met" if lat <= self.budget else "max_iters"
            self.done = True
            return
        step = (self.step_ms if self.step_ms is not None
                else max(0.0, (self.lat0 - self.budget) / 4)) * self.step_decay ** (it - 1)
        a = cur["assignment"]
        inputs: dict[str, Any] = {"train": {"epochs": self.short_term_epochs},
                                  "stage": "short_term"}
        if self.inherit:  # the estimator crops the weights: first filters kept
            inputs["inherit"] = {"weights": self._weights(a)}
        queued = 0
        for label in self.names:
            best = None
            for o in sorted((o for o in self.space.decision(label).options if o < a[label]),
                            reverse=True):
                b = a.replace(**{label: o})
                best = (o, b, self.table_ms(b))
                if lat - best[2] >= step:
                    break
            if best is not None:
                queued += 1
                self._add("proposal", best[1], inputs, iter=it, target_ms=lat - step,
                          layer=label, filters=best[0], was=a[label],
                          latency_table_ms=best[2], met_target=lat - best[2] >= step)
        if not queued:
            self.stop, self.done = "nothing can shrink", True
