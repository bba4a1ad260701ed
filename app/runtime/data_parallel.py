"""The runner's side of data-parallel supernet searches: strategy option ``workers``.

A one-shot search (``darts`` and its variants, ``fbnet``, ``proxylessnas``) given the strategy
option ``workers: N`` (N > 1) trains each supernet epoch in N processes
(:class:`~nasir.strategies.oneshot.data_parallel.DataParallelJob`): spawned locally, or one
Ray actor per rank when the experiment's executor is ``ray``; gloo on CPU, NCCL when the
run's device is CUDA. The driver's job runner wraps the strategy's job (:func:`job_runner`)
before it runs it, so checkpoints, the per-epoch records in the store, ``nasir resume``
and the report are those of a one-process search. Each rank rebuilds the job from the
experiment (:func:`rebuild_job`: the run's space, the strategy the driver made — its
registry name and options, handed down by the driver — and the run's data), as a Ray trial
worker does.

>>> strip_workers({"epochs": 3, "workers": 2})
({'epochs': 3}, 2)
>>> strip_workers({"epochs": 3})
({'epochs': 3}, 1)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.jobs import JobRunner

__all__ = ["DataParallelJobRunner", "job_runner", "job_wrapper", "rebuild_job",
           "strip_workers"]


def strip_workers(options: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A one-shot strategy's options without ``workers`` (the runner's option, not the
    search's), and its value (default 1)."""
    opts = dict(options)
    workers = opts.pop("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise NasirError(f"workers must be an integer >= 1, got {workers!r}",
                         where="experiment option strategy.options.workers",
                         hint="processes each supernet epoch trains in, e.g. 2")
    return opts, workers


def rebuild_job(exp: Mapping[str, Any], folder: str | None, name: str,
                options: Mapping[str, Any]) -> Any:
    """The experiment's one-shot job built afresh (what each rank trains; picklable with
    ``functools.partial``): the run's space, the strategy ``name`` (its registry name) made
    with ``options`` (the driver's: ``workers`` left out) and the run's data."""
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.jobs import give_run_data
    from nasir.runtime.worker import build_space
    from nasir.strategies import make_strategy

    e = Experiment.from_dict(exp)
    strategy = make_strategy(name, build_space(exp, folder, []), seed=e.seed,
                             objective="reward", **options)
    give_run_data(strategy, e)
    job = strategy.job()
    if job is None:
        raise NasirError(f"strategy {name} has no supernet job to train data-parallel",
                         where="experiment option strategy.options.workers")
    return job


def job_wrapper(exp: Any, folder: str | None, name: str, options: Mapping[str, Any]
                ) -> Callable[[Any], Any] | None:
    """What the driver wraps each search job with: ``None`` unless the strategy option
    ``workers`` is above 1. ``name`` and ``options``: the strategy the driver made, which
    each rank makes again (:func:`rebuild_job`)."""
    _, workers = strip_workers(exp.strategy.options)
    if workers == 1:
        return None
    from nasir.backends.torch.device import resolve_device
    from nasir.strategies.oneshot.data_parallel import DataParallelJob

    device = "cuda" if resolve_device(exp.device).type == "cuda" else "cpu"
    launcher = "ray" if exp.executor.kind == "ray" else "local"
    rebuild = functools.partial(rebuild_job, exp.to_dict(), folder, name, dict(options))

    def wrap(job: Any) -> Any:
        return DataParallelJob(job, rebuild, workers, launcher=launcher, device=device)

    return wrap


class DataParallelJobRunner(JobRunner):
    """A :class:`~nasir.runtime.jobs.JobRunner` that runs each job through ``wrap``."""

    def __init__(self, *args: Any, wrap: Callable[[Any], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrap = wrap

    def run(self, job: Any) -> dict[str, Any]:
        """Run ``job`` data-parallel (see :class:`~nasir.runtime.jobs.JobRunner.run`)."""
        return super().run(self.wrap(job))


def job_runner(store: Any, strategy: Any, callback: Any, new_events: Any, exp: Any,
               folder: str | None, name: str, options: Mapping[str, Any]) -> JobRunner:
    """The driver's job runner: data-parallel when the strategy option ``workers`` > 1
    (``name``, ``options``: the registry name and options ``strategy`` was made with)."""
    wrap = job_wrapper(exp, folder, name, options)
    if wrap is None:
        return JobRunner(store, strategy, callback, new_events)
    return DataParallelJobRunner(store, strategy, callback, new_events, wrap=wrap)
