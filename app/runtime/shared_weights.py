"""The ``shared`` estimator: children scored with the shared weights an ENAS run trains.

An ENAS run (:mod:`nasir.strategies.oneshot.enas_runner`) trains its shared weights in a
runner job whose checkpoint is ``<run>/jobs/enas-shared.pt``. Each child the controller
proposes carries, in its trial inputs (``task["inputs"]["shared"]``), the weights it was
proposed against — the job and how many epochs it had trained (``steps``) — and how to
score it. :class:`SharedWeightsEstimator`

- loads that checkpoint (``weights_only=True``) once per version and **refuses** a
  checkpoint of another version (a :class:`~nasir.errors.TrialError`): a child is scored
  by the weights it was proposed against or not at all; the driver never reuses another
  trial's result for a trial with inputs, so no child gets a reward measured under other
  weights;
- scores a ``child`` on one full batch of the architecture half (the paper's reward), a
  ``derive`` candidate on ``batches`` batches (``None``: the whole half): accuracy with
  BatchNorm batch statistics, as :class:`~nasir.strategies.oneshot.enas.EnasSearch`
  does. The batch is picked by the trial seed (a function of the run seed and the
  child's hash), so a score depends on the child and the weights version only;
- trains the ``derived`` child from scratch with the training estimator (option
  ``final``: ``training``, the default, with ``final_options`` over
  :data:`~nasir.runtime.experiment.TRAINING_DEFAULTS`), or scores it with the shared
  weights (``final = "shared"``).

``strategy enas`` turns the ``training`` estimator (the default) into this one, its
options training the derived child (:func:`enas_options`); it scores nothing else (a trial
without ``shared`` inputs is an error; :func:`check_shared_strategy` at start), and ENAS runs
with no other estimator (``Enas.estimators``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nasir.errors import NasirError, TrialError
from nasir.space import Space

__all__ = ["SharedConfig", "SharedWeightsEstimator", "check_shared_strategy", "enas_options",
           "shared_estimator"]


@dataclass(frozen=True)
class SharedConfig:
    """Options of the ``shared`` estimator: how the derived child is evaluated —
    ``final`` ``training`` (from scratch, the training estimator with ``final_options``)
    or ``shared`` (with the final shared weights, like the derivation's candidates)."""

    final: Literal["training", "shared"] = "training"
    final_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.final not in ("training", "shared"):
            raise NasirError(f"shared estimator option final must be 'training' or "
                             f"'shared', got {self.final!r}", where="estimator.options.final")


def shared_estimator(e: Any, run_dir: str | None, device: str) -> SharedWeightsEstimator:
    """The ``shared`` estimator of an :class:`~nasir.runtime.experiment.Experiment` ``e``
    (its derived child trained by the training estimator unless ``final = "shared"``)."""
    from nasir.runtime.experiment_sections import TRAINING_DEFAULTS
    from nasir.runtime.training_estimator import TrainingEstimator, load_run_data

    cfg = SharedConfig(**e.estimator.options)
    threads = max(1, int(e.executor.cpus_per_trial))
    final = None if cfg.final == "shared" else TrainingEstimator(
        {**TRAINING_DEFAULTS, **cfg.final_options}, threads=threads,
        weights_dir=os.path.join(run_dir, "weights") if run_dir else None,
        data=load_run_data(e), device=device)
    return SharedWeightsEstimator(e.estimator.options, run_dir=run_dir, data=load_run_data(e),
                                  device=device, final=final, threads=threads)


def enas_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``shared`` estimator's options for an ENAS run given the training estimator's:
    ENAS scores its children with its shared weights, and the training options
    (``--epochs``, ``--estimator-opt``) train its derived child (``final_options``).

    >>> enas_options({"epochs": 5, "final_options": {"lr": 0.01}})
    {'final_options': {'epochs': 5, 'lr': 0.01}}
    >>> enas_options({})
    {}
    """
    opts = dict(options)
    train = {k: opts.pop(k) for k in list(opts) if k not in ("final", "final_options")}
    if train:
        opts["final_options"] = {**train, **dict(opts.get("final_options") or {})}
    return opts


def check_shared_strategy(strategy: str, estimators: tuple[str, ...] | None) -> None:
    """The ``shared`` estimator scores the children of a run that trains shared weights: a
    strategy whose ``estimators`` (:attr:`~nasir.strategies.base.Strategy.estimators`) name
    it, ENAS. Paired with any other strategy it is a :class:`NasirError` at start (the other
    direction, ENAS with another estimator, is the generic ``estimators`` check).

    >>> check_shared_strategy("enas", ("shared",))
    >>> try:
    ...     check_shared_strategy("random", None)
    ... except NasirError as e:
    ...     print(e.message)
    the shared estimator scores the children of an ENAS run; strategy random trains no \
shared weights
    """
    if "shared" not in (estimators or ()):
        raise NasirError(f"the shared estimator scores the children of an ENAS run; "
                         f"strategy {strategy} trains no shared weights",
                         where="estimator.kind",
                         hint="use --strategy enas, or --estimator oneshot (weight sharing "
                              "for any strategy)")


class SharedWeightsEstimator:
    """Scores ENAS's children with the shared weights of their version (module docstring).

    ``run_dir``: the run folder (its ``jobs/`` holds the checkpoint). ``data``: the run's
    :class:`~nasir.backends.torch.data.DataSplits` (``None``: digits). ``final``: the
    estimator of the derived child (``None``: shared weights).
    """

    name = "shared"

    def __init__(self, options: Mapping[str, Any] | None = None, *, run_dir: str | None,
                 data: Any = None, device: str = "cpu", final: Any = None,
                 threads: int = 1) -> None:
        from nasir.backends.torch.device import resolve_device

        self.config = SharedConfig(**dict(options or {}))
        self.run_dir, self.splits, self.final = run_dir, data, final
        self.device = resolve_device(device)
        self.threads = max(1, int(threads))
        self._inputs: dict[str, Any] | None = None
        self._net: tuple[Any, Any] | None = None  # (version key, supernet)
        self._batches: tuple[Any, list[Any]] | None = None  # (data key, arch batches)

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Take the trial's inputs (which weights, which role)."""
        self._inputs = dict((task.get("inputs") or {}).get("shared") or {}) or None

    def _checkpoint(self, job: str, steps: int) -> dict[str, Any]:
        from nasir.runtime.jobs import checkpoint_path, load_checkpoint

        if self.run_dir is None:
            raise TrialError("the shared estimator needs the run folder of the weights",
                             hint="run ENAS through nasir search / nasir.optimize")
        path = checkpoint_path(self.run_dir, job)
        ckpt = load_checkpoint(path)
        have = None if ckpt is None else int(ckpt["state"].get("steps_done", -1))
        if ckpt is None or have != steps:
            raise TrialError(f"the shared weights this child was proposed against (job {job} "
                             f"after {steps} epochs) are gone: the checkpoint holds "
                             f"{'none' if have is None else f'{have} epochs'}",
                             where=os.path.relpath(path, self.run_dir),
                             hint="a child is scored by its own weights version only")
        return ckpt["state"]

    def _supernet(self, space: Space, ins: Mapping[str, Any]) -> Any:
        from nasir.strategies.oneshot.enas_job import shared_supernet

        key = (space.name, ins["job"], int(ins["steps"]), int(ins["seed"]))
        if self._net is None or self._net[0] != key:
            import torch

            state = self._checkpoint(str(ins["job"]), int(ins["steps"]))
            with torch.random.fork_rng(devices=[]):
                net = shared_supernet(space, int(ins["seed"]), dict(ins.get("fixed") or {}),
                                      self.device)
            net.load_state_dict(state["weights"])
            self._net = (key, net)
        return self._net[1]

    def _arch_batches(self, ins: Mapping[str, Any]) -> list[Any]:
        key = (int(ins["batch_size"]), int(ins["seed"]), float(ins["data_fraction"]))
        if self._batches is None or self._batches[0] != key:
            from nasir.backends.torch.data import digits_splits
            from nasir.strategies.oneshot.enas_job import search_halves

            splits = self.splits if self.splits is not None else digits_splits()
            d = search_halves(splits, key[0], key[1], key[2], self.device)
            self._batches = (key, list(d.train_a))
        return self._batches[1]

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """``accuracy`` of the child with its shared weights (or the derived child's)."""
        import torch

        ins = self._inputs
        if ins is None:
            raise TrialError("the shared estimator scores ENAS's children only: this trial "
                             "names no shared weights", hint="use it with --strategy enas")
        role = str(ins.get("role", "child"))
        if role == "derived" and self.final is not None:
            return {**self.final.evaluate(space, assignment, seed=seed), "role": role}
        t0 = time.perf_counter()
        torch.set_num_threads(self.threads)
        net = self._supernet(space, ins)
        batches = self._arch_batches(ins)
        n = ins.get("batches")
        if n is not None:  # the paper: one batch per child, picked by the trial's seed
            if len(batches) > 1 and len(batches[-1][1]) < len(batches[0][1]):
                batches = batches[:-1]  # a short last batch would make a noisier reward
            first = int(seed) % len(batches)
            batches = [batches[(first + j) % len(batches)] for j in range(int(n))]
        a = {**dict(assignment), **dict(ins.get("fixed") or {})}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))  # any stochastic layer draws the same each time
            net.set_path(a)
            net.train()  # BatchNorm on batch statistics, as EnasSearch scores children
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            acc = float((net(x).argmax(1) == y).float().mean())
        return {"accuracy": acc, "role": role, "shared_epochs": int(ins["steps"]),
                "shared_eval_s": round(time.perf_counter() - t0, 4),
                "device": str(self.device)}
