"""Search jobs: resumable work a strategy asks the runner to do before it proposes again.

Propose/feedback fits black-box strategies. One-shot methods also have to *train*: DARTS,
FBNet and ProxylessNAS train a supernet (and its architecture weights) before they can
derive a child; ENAS trains its shared weights between controller steps. That training is a
:class:`SearchJob` the strategy hands the runner through :meth:`Strategy.job`:

1. Before each ``propose`` the driver asks ``strategy.job()``. ``None``: propose as usual.
2. Otherwise the driver runs the job step by step (a step is an epoch, or a unit the job
   chooses), with a progress bar. After every step it writes the job's
   :meth:`~SearchJob.state_dict` to ``<run>/jobs/<name>.pt`` (atomically; loaded with
   ``weights_only=True``) and the step's JSON record to the store in one go, so ``kill -9``
   loses at most the step in flight and ``nasir resume`` continues from the last step.
3. When ``steps_done == total_steps`` the driver calls :meth:`~SearchJob.result` and gives it
   to :meth:`Strategy.job_done`, which is recorded as an event (``{"event": "job", ...}``):
   replaying a run's history hands the stored result back without training again.

A job's steps are deterministic given its seed and the state it was resumed from (RNG states
belong in ``state_dict``), so an interrupted and resumed job ends where an uninterrupted one
does.

>>> class Count(SearchJob):
...     name, total_steps = "count", 3
...     def __init__(self):
...         super().__init__(); self.total = 0
...     def _step(self):
...         self.total += self.steps_done
...         return {"total": self.total}
...     def state_dict(self):
...         return {**super().state_dict(), "total": self.total}
...     def load_state_dict(self, state):
...         super().load_state_dict(state); self.total = int(state["total"])
...     def result(self):
...         return {"total": self.total}
>>> j = Count(); [j.step()["total"] for _ in range(2)]
[0, 1]
>>> k = Count(); k.load_state_dict(j.state_dict()); k.step(), k.done, k.result()
({'step': 2, 'total': 3}, True, {'total': 3})
"""

from __future__ import annotations

from typing import Any, ClassVar

from nasir.errors import NasirError

__all__ = ["SearchJob"]


class SearchJob:
    """One resumable unit of training a strategy needs (see the module docstring).

    Subclasses set ``name`` (unique within a run; it names the checkpoint file) and
    ``total_steps``, and implement ``_step`` (one step; returns a JSON-able record — e.g.
    the epoch's loss and architecture weights, which the store keeps and the report
    plots), :meth:`state_dict` / :meth:`load_state_dict` (everything needed to continue:
    weights, optimiser and RNG states; only tensors, numbers, strings, lists and dicts, so
    it loads with ``weights_only=True``) and :meth:`result` (JSON-able; what the strategy
    needs once the job is done).
    """

    name: ClassVar[str] = "job"
    total_steps: int = 1

    def __init__(self) -> None:
        self.steps_done = 0

    @property
    def done(self) -> bool:
        """Whether every step has run."""
        return self.steps_done >= self.total_steps

    def step(self) -> dict[str, Any]:
        """Run the next step; its record, with ``step`` (0-based) added."""
        if self.done:
            raise NasirError(f"job {self.name} already ran its {self.total_steps} steps",
                             hint="ask for result() instead")
        record = dict(self._step())
        record["step"] = self.steps_done
        self.steps_done += 1
        return {"step": record.pop("step"), **record}

    def _step(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a resumed job needs (subclasses extend this dict)."""
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (as :meth:`state_dict` returned it)."""
        self.steps_done = int(state["steps_done"])

    def result(self) -> dict[str, Any]:
        """The job's outcome once :attr:`done` (JSON-able)."""
        raise NotImplementedError
