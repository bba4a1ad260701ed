"""The registry adapter of the one-shot searches: a declared one-shot kind of strategy.

Under the runner a search whose searcher makes a job (DARTS, FBNet, ProxylessNAS:
``make_job``) is a :class:`~nasir.strategies.jobs.SearchJob` of the run —
:meth:`OneShotStrategy.job` hands it to the driver until it is done (checkpointed per epoch,
resumable, its per-epoch records in the store). Then ``propose`` returns the derived child,
then (strategy option ``top_k``, default 1) the next most probable *distinct* children of
the final architecture weights (:func:`~nasir.strategies.oneshot.children.ranked_children`),
then raises :class:`~nasir.strategies.dedup.SpaceExhausted`, which ends the run. The
children are evaluated as normal trials by the run's estimators. ``distinct_proposals``
tells the driver to refuse a repeated architecture.

Outside the runner the first ``propose`` runs the job itself. Searches without a job (ENAS,
NetAdapt) run their whole ``search()`` on the first ``propose``, which returns the derived
assignment once.

>>> from nasir.spaces import get_space
>>> from nasir.strategies import make_strategy
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> s = make_strategy("darts", sp, seed=0, epochs=1, data_fraction=0.05, order=1, top_k=2)
>>> job = s.job()
>>> while not job.done:
...     _ = job.step()
>>> s.job_done(job.name, job.result()); s.job() is None
True
>>> a, b = s.propose(1) + s.propose(1)
>>> a == s.result.assignment, a != b
(True, True)
>>> s.propose(1)
Traceback (most recent call last):
...
nasir.strategies.dedup.SpaceExhausted: darts proposed its 2 derived children (top_k=2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from nasir.errors import SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import Strategy
from nasir.strategies.jobs import SearchJob

__all__ = ["OneShotStrategy"]


class OneShotStrategy(Strategy):
    """Registry adapter (module docstring); options are passed to the search class, except
    ``top_k`` (derived children proposed). Subclasses set ``search_cls``."""

    name: ClassVar[str] = "oneshot"
    search_cls: ClassVar[Callable[..., Any] | None] = None
    #: the search's variant this registry name runs (searches with variants only)
    variant: ClassVar[str | None] = None
    #: the driver refuses a proposal whose architecture the run already has
    distinct_proposals: ClassVar[bool] = True

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 top_k: int = 1, **options: Any) -> None:
        super().__init__(space, seed, objective)
        if self.search_cls is None:
            raise SpecError(f"{type(self).__name__} has no search class")
        if not isinstance(top_k, int) or top_k < 1:
            raise SpecError(f"top_k must be an integer >= 1, got {top_k!r}",
                            where=f"strategy {self.name} option top_k",
                            hint="the number of derived children to evaluate")
        if self.variant is not None:
            if "variant" in options:
                raise SpecError(f"strategy {self.name} runs the {self.variant} variant",
                                hint="pick another variant by its registry name")
            options = {"variant": self.variant, **options}
        self.searcher = self.search_cls(space, seed=seed, **options)
        self.top_k = top_k
        #: the search's outcome (a :class:`~nasir.strategies.oneshot.common.OneShotResult`)
        self.result: Any = None
        self._job: SearchJob | None = None
        self._data: Callable[[], Any] | None = None
        self._children: list[Assignment] | None = None
        self._given = 0

    def state(self) -> dict[str, Any]:
        """The base state plus ``top_k`` and, for searches with variants, ``variant``,
        every setting and the settings the options ``changed`` from the variant's."""
        from nasir.strategies.oneshot.common import SearchSettings

        out = super().state() | {"top_k": self.top_k}
        cfg = getattr(self.searcher, "settings", None)
        if isinstance(cfg, SearchSettings):
            out |= {"variant": self.searcher.variant, "settings": cfg.to_json(),
                    "changed": dict(self.searcher.changed)}
        return out

    @property
    def has_job(self) -> bool:
        """Whether the search runs as a job of the runner (its searcher makes one)."""
        return hasattr(self.searcher, "make_job")

    def use_run_data(self, splits: Callable[[], Any]) -> None:
        """Train on the run's data: ``splits()`` gives its
        :class:`~nasir.backends.torch.data.DataSplits` (called when the job is built)."""
        self._data = splits

    def job(self) -> SearchJob | None:
        """The supernet search, until it is done (then ``None``)."""
        if not self.has_job or self.result is not None:
            return None
        if self._job is None:
            data = None
            if self._data is not None:
                data = self.searcher.data_for(self._data())
            self._job = self.searcher.make_job(data)
        return self._job

    def _job_done(self, name: str, result: dict[str, Any]) -> None:
        from nasir.strategies.oneshot.common import OneShotResult

        self.result = OneShotResult(str(result["method"]),
                                    self.space.check(result["assignment"]),
                                    float(result["wall_s"]), int(result["epochs"]),
                                    list(result["history"]), dict(result["extra"]))
        self._job = None

    def children(self) -> list[Assignment]:
        """The derived child and the next most probable distinct ones (``top_k`` in all)."""
        from nasir.strategies.oneshot.children import ranked_children

        if self._children is None:
            assert self.result is not None
            cfg = getattr(self.searcher, "settings", None)
            none = getattr(cfg, "none", "keep")
            extra = self.result.extra
            self._children = ranked_children(self.space, extra.get("arch_probs", {}),
                                             self.result.assignment, self.top_k, none,
                                             extra.get("cell_nodes"))
        return self._children

    def _propose(self, n: int) -> list[Assignment]:
        from nasir.strategies.dedup import SpaceExhausted

        if self.result is None:
            if self.has_job:  # outside the runner: run the job here
                job = self.job()
                assert job is not None
                while not job.done:
                    job.step()
                self.job_done(job.name, job.result())
            else:
                t = time.perf_counter()
                self.result = self.searcher.search()
                self.result.wall_s = time.perf_counter() - t
        kids = self.children()
        if self._given >= len(kids):
            raise SpaceExhausted(f"{self.name} proposed its {len(kids)} derived children "
                                 f"(top_k={self.top_k})")
        out = kids[self._given:self._given + n]
        self._given += len(out)
        return out
