"""The driver's side of search jobs: run a strategy's :class:`~nasir.strategies.jobs.SearchJob`
step by step, checkpointed, recorded and resumable after ``kill -9``.

Before each ``propose`` the driver calls :meth:`JobRunner.run_pending`. While
``strategy.job()`` hands back a job, the runner

1. loads ``<run>/jobs/<name>.pt`` if it exists (``torch.load(..., weights_only=True)``) and
   continues from it; store rows of steps beyond that checkpoint are dropped, and the
   checkpoint's own last record is written back if its row was never written;
2. runs the remaining steps; after each it writes the checkpoint (the job's
   ``state_dict`` and the step's record; ``torch.save`` to a temporary file, then
   ``os.replace``) *before* the step's row in the store's ``job_steps`` table, so a kill
   between the two loses nothing the checkpoint does not have;
3. calls :meth:`Strategy.job_done` with the job's result and stores the ``job`` event.

A kill at any point therefore resumes at the last checkpointed step: the checkpoint is the
truth, the table a copy of its records. Callback events (``job_start``, ``job_step``,
``job_end``) let the console draw a progress bar.

>>> import tempfile
>>> from nasir.runtime.store import RunStore
>>> from nasir.spaces import get_space
>>> from nasir.strategies.jobs import SearchJob
>>> from nasir.strategies.random_search import RandomSearch
>>> class Count(SearchJob):
...     name, total_steps = "count", 3
...     def __init__(self):
...         super().__init__(); self.total = 0
...     def _step(self):
...         self.total += self.steps_done + 1
...         return {"total": self.total}
...     def state_dict(self):
...         return {**super().state_dict(), "total": self.total}
...     def load_state_dict(self, state):
...         super().load_state_dict(state); self.total = int(state["total"])
...     def result(self):
...         return {"total": self.total}
>>> class Counting(RandomSearch):
...     def job(self):
...         return None if any(e["event"] == "job" for e in self.history) else Count()
>>> st = RunStore.create(tempfile.mkdtemp(), {})
>>> s = Counting(get_space("nb201"), seed=0)
>>> JobRunner(st, s, lambda kind, info: None).run_pending()
1
>>> [r["record"]["total"] for r in st.job_steps("count")], st.events()[-1]["result"]
([1, 3, 6], {'total': 6})
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from nasir.errors import NasirError, StoreError
from nasir.runtime.store import RunStore
from nasir.strategies.base import Strategy
from nasir.strategies.jobs import SearchJob

__all__ = ["JOBS_DIR", "JobRunner", "checkpoint_path", "give_run_data", "load_checkpoint",
           "refuse_duplicate", "save_checkpoint"]

#: folder of a run that holds the jobs' checkpoints
JOBS_DIR = "jobs"
#: most jobs one propose may ask for in a row (a strategy that never says it is done)
MAX_JOBS_IN_A_ROW = 1000

Callback = Callable[[str, Mapping[str, Any]], None]


def checkpoint_path(folder: str, name: str) -> str:
    """``<folder>/jobs/<name>.pt``; ``name`` must be folder-safe.

    >>> checkpoint_path("run", "darts")
    'run/jobs/darts.pt'
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise NasirError(f"bad search job name {name!r}", where="SearchJob.name",
                         hint="letters, digits, '_', '-' and '.' only (it names a file)")
    return os.path.join(folder, JOBS_DIR, f"{name}.pt")


def save_checkpoint(path: str, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically: a temporary file, flushed, then ``os.replace``."""
    import torch

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot write the job checkpoint: {e.strerror or e}", where=path,
                         hint="free disk space or make the run folder writable; "
                              "`nasir resume` continues from the last checkpoint") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``weights_only=True``), or ``None`` if there is none."""
    import torch

    if not os.path.exists(path):
        return None
    try:
        out = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refuses or the file is torn: say which file
        raise StoreError(f"cannot read the job checkpoint: {e}", where=path,
                         hint="delete it to run the job again from its first step") from None
    if not isinstance(out, dict) or "state" not in out:
        raise StoreError("not a nasir job checkpoint", where=path,
                         hint="delete it to run the job again from its first step")
    return out


class JobRunner:
    """Runs the jobs a strategy asks for, against the run in ``store`` (see the module
    docstring). ``new_events`` returns the strategy events not yet stored (the driver's
    bookkeeping; by default the ones after those already in the store)."""

    def __init__(self, store: RunStore, strategy: Strategy, callback: Callback,
                 new_events: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.store, self.strategy, self.callback = store, strategy, callback
        self._stored = len(strategy.history)
        self.new_events = new_events or self._since_last

    def _since_last(self) -> list[dict[str, Any]]:
        ev = self.strategy.history[self._stored:]
        self._stored = len(self.strategy.history)
        return list(ev)

    def run_pending(self) -> int:
        """Run every job the strategy asks for before it can propose; how many ran."""
        n = 0
        while (job := self.strategy.job()) is not None:
            if n >= MAX_JOBS_IN_A_ROW:
                raise NasirError(f"strategy {self.strategy.name} asked for more than "
                                 f"{MAX_JOBS_IN_A_ROW} jobs without proposing",
                                 where=f"{type(self.strategy).__name__}.job",
                                 hint="job() must return None once its job is done")
            self.run(job)
            n += 1
        return n

    def run(self, job: SearchJob) -> dict[str, Any]:
        """Run (or continue) ``job`` to its end, hand the result to the strategy; the result."""
        path = checkpoint_path(self.store.folder, job.name)
        ckpt = load_checkpoint(path)
        if ckpt is not None:
            job.load_state_dict(ckpt["state"])
            last = ckpt.get("record")
            if isinstance(last, dict) and job.steps_done >= 1:
                have = {r["step"] for r in self.store.job_steps(job.name)}
                if job.steps_done - 1 not in have:  # killed between checkpoint and row
                    self.store.add_job_step(job.name, job.steps_done - 1, last)
        self.store.drop_job_steps(job.name, job.steps_done)
        self.callback("job_start", {"name": job.name, "total": job.total_steps,
                                    "done": job.steps_done, "resumed": ckpt is not None})
        while not job.done:
            record = dict(job.step())  # deterministic: timings are the rows' ``at``
            save_checkpoint(path, {"state": job.state_dict(), "record": record})
            self.store.add_job_step(job.name, int(record["step"]), record)
            self.callback("job_step", {"name": job.name, "total": job.total_steps,
                                       "done": job.steps_done, "record": record})
        result = dict(job.result())
        self.strategy.job_done(job.name, result)
        self.store.add_events(self.new_events())
        self.callback("job_end", {"name": job.name, "total": job.total_steps,
                                  "result": result})
        return result


def give_run_data(strategy: Strategy, exp: Any) -> None:
    """Hand a strategy that trains (it has ``use_run_data``) the run's data, lazily: a
    function returning the :class:`~nasir.backends.torch.data.DataSplits` the run's trials
    train on (the experiment's data, ``--data``), digits when they train on none."""
    use = getattr(strategy, "use_run_data", None)
    if use is None:
        return

    def splits() -> Any:
        from nasir.backends.torch.data import digits_splits
        from nasir.runtime.training_estimator import load_run_data

        got = load_run_data(exp)
        return got if got is not None else digits_splits()

    use(splits)


def refuse_duplicate(strategy: Strategy, hash_: str, proposed: set[str],
                     assignment: Mapping[str, Any]) -> None:
    """Refuse a proposal of a strategy that promises distinct ones (``distinct_proposals``,
    the one-shot strategies) when the run already has its architecture (``hash_`` among
    ``proposed``): nothing evaluates the same architecture twice by accident.

    >>> from nasir.spaces import get_space
    >>> from nasir.strategies.random_search import RandomSearch
    >>> class Distinct(RandomSearch):
    ...     name, distinct_proposals = "distinct", True
    >>> s = Distinct(get_space("nb201"))
    >>> refuse_duplicate(s, "h1", {"h0"}, {})
    >>> try:
    ...     refuse_duplicate(s, "h1", {"h1"}, {"edge_0_1": "none"})
    ... except NasirError as e:
    ...     print(e.message)
    strategy distinct proposed an architecture already proposed in this run (edge_0_1=none)
    """
    if not getattr(strategy, "distinct_proposals", False) or hash_ not in proposed:
        return
    text = ", ".join(f"{k}={v}" for k, v in assignment.items())
    raise NasirError(f"strategy {strategy.name} proposed an architecture already proposed "
                     f"in this run ({text[:300]})",
                     where=f"{type(strategy).__name__}.propose",
                     hint="a one-shot strategy proposes each derived child once; ask for "
                          "more distinct children with the strategy option top_k")
