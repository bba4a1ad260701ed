"""The supernet search of DARTS, FBNet and ProxylessNAS as a resumable :class:`SearchJob`.

One step is one epoch. The job holds the supernet, the architecture logits, both
optimisers, the lr schedule, the architecture half's position (:class:`ResumableCycle`) and
every RNG the search draws from (torch's global CPU generator: Gumbel noise, sampled paths;
the data order's generator; CUDA's on a GPU). Each step starts from the RNG states the last
one ended with, so a job resumed from its :meth:`~SupernetJob.state_dict` continues
bit-identically, and a job that shares the process with other work (the runner's trials)
is not disturbed by it.

A method's job subclasses :class:`SupernetJob` with its per-batch ``weight_step`` and
``arch_step`` and its ``_epoch`` (see :mod:`~nasir.strategies.oneshot.darts_job` and
:mod:`~nasir.strategies.oneshot.latency_job`).

>>> import torch
>>> from torch.utils.data import TensorDataset
>>> from nasir.backends.torch.batches import device_loader
>>> ds = TensorDataset(torch.arange(10.0), torch.arange(10))
>>> g = torch.Generator().manual_seed(0)
>>> loader = device_loader(ds, 4, shuffle=True, generator=g, device=torch.device("cpu"))
>>> c = ResumableCycle(loader)
>>> first = [next(c)[1].tolist() for _ in range(2)]
>>> state, gen_state = c.state_dict(), g.get_state()
>>> later = [next(c)[1].tolist() for _ in range(3)]
>>> d = ResumableCycle(loader); d.load_state_dict(state); _ = g.set_state(gen_state)
>>> [next(d)[1].tolist() for _ in range(3)] == later
True
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from nasir.strategies.controller import single_thread
from nasir.strategies.jobs import SearchJob

__all__ = ["ResumableCycle", "SupernetJob", "loader_generator"]


def loader_generator(loader: Any) -> torch.Generator | None:
    """The CPU ``torch.Generator`` a loader draws its order from (``None``: the global one)."""
    inner = getattr(loader, "loader", None)  # a DeviceLoader wraps the real loader
    if inner is not None and not hasattr(loader, "generator"):
        return loader_generator(inner)
    return getattr(loader, "generator", None)


def _get_state(gen: torch.Generator | None) -> torch.Tensor:
    return torch.get_rng_state() if gen is None else gen.get_state()


def _set_state(gen: torch.Generator | None, state: torch.Tensor) -> None:
    if gen is None:
        torch.set_rng_state(state)
    else:
        gen.set_state(state)


class ResumableCycle:
    """Endless iteration over a loader (reshuffled each pass, like
    :func:`~nasir.strategies.oneshot.common.cycle`) that can be checkpointed mid-pass: its
    state is the order generator's state when the current pass began and how many batches
    of it were taken. Loading it replays the pass's start and skips those batches; the
    caller then sets the generator to its saved current state (the job does)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.gen = loader_generator(loader)
        self._it: Iterator[Any] | None = None
        self._start: torch.Tensor | None = None
        self.pos = 0

    def __iter__(self) -> ResumableCycle:
        return self

    def __next__(self) -> Any:
        while True:
            if self._it is None:
                self._start = _get_state(self.gen).clone()
                self._it, self.pos = iter(self.loader), 0
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                continue
            self.pos += 1
            return batch

    def state_dict(self) -> dict[str, Any]:
        """``{"start": generator state at the pass's start or None, "pos": batches taken}``."""
        return {"start": None if self._it is None else self._start, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the pass of ``state`` (leaves the order generator moved: restore it)."""
        self._it, self._start, self.pos = None, None, 0
        if state.get("start") is None:
            return
        start = state["start"]
        _set_state(self.gen, start)
        self._start, self._it = start.clone(), iter(self.loader)
        for _ in range(int(state["pos"])):
            next(self._it)
        self.pos = int(state["pos"])


class SupernetJob(SearchJob):
    """Base of the supernet jobs: one epoch a step, checkpointable (module docstring).

    Subclasses build ``self.net``, ``self.optimizers`` (name → optimizer), optionally
    ``self.schedulers``, and ``self.arch_it``, call :meth:`_capture_rng` last in their
    ``__init__``, and implement :meth:`_epoch` (the epoch's record) and :meth:`outcome`.
    """

    name: ClassVar[str] = "supernet"

    def __init__(self, searcher: Any, data: Any) -> None:
        super().__init__()
        self.searcher, self.data = searcher, data
        self.total_steps = int(searcher.epochs)
        self.device = searcher.device
        self.net: Any = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.arch_it: ResumableCycle | None = None
        #: per-epoch records (the method's history; the runner's store keeps them too)
        self.history: list[dict[str, Any]] = []
        #: seconds spent in steps (all runs of the job together)
        self.wall_s = 0.0
        self._rng: dict[str, Any] = {}
        self._outcome: Any = None

    # -- RNG ownership -------------------------------------------------------------------------
    def _generators(self) -> list[torch.Generator]:
        out: list[torch.Generator] = []
        for loader in (self.data.train_w, self.data.train_a):
            g = loader_generator(loader)
            if g is not None and all(g is not o for o in out):
                out.append(g)
        return out

    def _capture_rng(self) -> None:
        self._rng = {"cpu": torch.get_rng_state(),
                     "data": [g.get_state() for g in self._generators()]}
        if self.device.type == "cuda":
            self._rng["cuda"] = torch.cuda.get_rng_state(self.device)

    def _restore_rng(self) -> None:
        torch.set_rng_state(self._rng["cpu"])
        for g, s in zip(self._generators(), self._rng["data"]):
            g.set_state(s)
        if "cuda" in self._rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(self._rng["cuda"], self.device)

    # -- the job contract ----------------------------------------------------------------------
    def _step(self) -> dict[str, Any]:
        t = time.perf_counter()
        with single_thread():
            self._restore_rng()
            record = self._epoch(self.steps_done)
            self._capture_rng()
        self.history.append({k: v for k, v in record.items() if k != "probs"})
        self.wall_s += time.perf_counter() - t
        return record

    def _epoch(self, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, schedule, data position and RNG states, the history."""
        return {**super().state_dict(), "net": self.net.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "arch_it": self.arch_it.state_dict() if self.arch_it is not None else {},
                "rng": dict(self._rng), "history": list(self.history),
                "wall_s": self.wall_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (as :meth:`state_dict` returned it)."""
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if self.arch_it is not None:
            self.arch_it.load_state_dict(state["arch_it"])
        self._rng = dict(state["rng"])
        self.history = [dict(r) for r in state["history"]]
        self.wall_s = float(state["wall_s"])
        self._outcome = None

    def outcome(self) -> Any:
        """The method's :class:`~nasir.strategies.oneshot.common.OneShotResult` (derived
        once the epochs are done; computed once)."""
        if self._outcome is None:
            with single_thread():
                self._restore_rng()
                self._outcome = self._derive()
                self._capture_rng()
        return self._outcome

    def _derive(self) -> Any:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        """The outcome as JSON (what the strategy's ``job_done`` gets)."""
        return dict(self.outcome().to_json())


def run_job_search(make_job: Any, data: Any = None) -> Any:
    """What a search's ``search(data)`` does: make its job, run every epoch, and return the
    job's :class:`~nasir.strategies.oneshot.common.OneShotResult` with ``wall_s`` the whole
    time (job construction included)."""
    t0 = time.perf_counter()
    job = make_job(data)
    while not job.done:
        job.step()
    out = job.outcome()
    out.wall_s = time.perf_counter() - t0
    return out
