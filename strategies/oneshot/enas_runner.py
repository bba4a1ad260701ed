"""ENAS through the runner (registry ``enas``): the controller proposes, shared weights
score, feedback trains the controller, and the shared weights train in a runner job.

The paper's alternation (Pham et al. 2018, §2.2), each part where the runner does it:

1. **Shared weights** — before epoch ``e``'s children, :meth:`Enas.job` hands the runner
   the :class:`~nasir.strategies.oneshot.enas_job.EnasWeightsJob` for epoch ``e`` (one
   pass over the weight half with controller-sampled paths), checkpointed in the run
   folder (``jobs/enas-shared.pt``) and recorded in the store.
2. **Controller** — ``controller_steps`` steps of ``controller_samples`` children each:
   :meth:`propose` samples children from the controller; every child is a trial whose
   ``trial_inputs`` name the shared weights it was proposed against (job ``enas-shared``
   after ``e + 1`` epochs), so the run's ``shared`` estimator
   (:mod:`nasir.runtime.shared_weights`) scores it with those weights on one batch of the
   architecture half, and the driver never reuses a result measured under other weights.
   Once a step's feedbacks are all in, one REINFORCE update (reward = the shared-weight
   accuracy ``+ entropy ×`` the sample's entropy, advantage against the moving-average
   baseline updated after every child) — :class:`EnasSearch`'s update, child for child.
   A step's children are sampled from the same controller, so a step can run on several
   workers at once; the next step waits for its feedback (``AwaitFeedback``).
3. **Derivation** — after the last epoch: ``derive_samples`` children sampled from the
   trained controller (the greedy one first under ``derive_greedy``), each a trial scored
   with the final shared weights on ``derive_batches`` batches (``trial_inputs``
   ``derive``); then the best of them is proposed once more as the **derived child**
   (``trial_inputs`` ``derived``), which the ``shared`` estimator trains from scratch
   with the training estimator (its ``final`` option). After that the space is exhausted:
   the run ends.

The plan has ``epochs × controller_steps × controller_samples + derive_samples + 1``
trials (:meth:`Enas.planned_trials`); a run whose budget is smaller is refused at start.
A resumed run replays the stored proposals, feedbacks and job events (the controller is
rebuilt update for update) and the runner continues the job from its checkpoint.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> s = Enas(sp, seed=0, epochs=1, controller_steps=2, controller_samples=2,
...          derive_samples=2, data_fraction=0.1)
>>> s.planned_trials(), s.job().name, s.job().total_steps
(7, 'enas-shared', 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from nasir.errors import NasirError, SpecError
from nasir.space import Assignment, Space
from nasir.strategies.base import AwaitFeedback, Strategy
from nasir.strategies.controller import Controller, single_thread
from nasir.strategies.dedup import SpaceExhausted
from nasir.strategies.oneshot.common import SearchData
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.enas_job import (
    JOB_NAME,
    EnasWeightsJob,
    search_halves,
    shared_supernet,
)

__all__ = ["Enas"]


class Enas(Strategy):
    """ENAS as a propose/feedback strategy with a shared-weight job (module docstring).

    Options are :class:`EnasSearch`'s (``variant``, ``fixed``, ``device`` and single
    :class:`~nasir.strategies.oneshot.enas.EnasSettings` fields); the runner needs
    ``controller_steps >= 1``.
    """

    name: ClassVar[str] = "enas"
    #: its children are scored with the shared weights it trains, which only the ``shared``
    #: estimator reads (a run turns ``training`` into it, :mod:`~nasir.runtime.experiment`)
    estimators: ClassVar[tuple[str, ...] | None] = ("shared",)

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy",
                 **options: Any) -> None:
        super().__init__(space, seed, objective)
        self.searcher = EnasSearch(space, seed=seed, **options)
        cfg = self.settings = self.searcher.settings
        if cfg.controller_steps < 1:
            raise SpecError("ENAS under the runner needs controller_steps >= 1",
                            where="strategy.options.controller_steps",
                            hint="its controller learns only from proposed children")
        with torch.random.fork_rng(devices=[]), single_thread():
            torch.manual_seed(self.seed)
            net = shared_supernet(space, self.seed, self.searcher.fixed)  # checks the space
            self.options = net.decisions()
            self.labels = list(self.options)
            self.ctrl: Controller = self.searcher._controller(net, self.rng)
        self.copt = torch.optim.Adam(self.ctrl.parameters(), lr=cfg.c_lr, betas=cfg.c_betas,
                                     eps=cfg.c_eps)
        self.baseline: float | None = cfg.baseline_init
        self._splits: Callable[[], Any] | None = None
        self._data: SearchData | None = None
        #: per proposal (in order): controller indices, entropy, trial inputs
        self.proposed: list[tuple[list[int], float, dict[str, Any]]] = []
        self._fed: list[float] = []  # the score of each fed proposal, in order
        self._step: list[tuple[list[int], float]] = []  # (indices, advantage) this step
        self.epochs_done = 0
        self._job: EnasWeightsJob | None = None
        self._job_state: dict[str, Any] | None = None
        #: the per-epoch records of the shared-weight job; the controller steps' rewards
        self.job_history: list[dict[str, Any]] = []
        self.step_rewards: list[float] = []

    # -- the plan ---------------------------------------------------------------------------
    @property
    def per_epoch(self) -> int:
        """Children proposed an epoch (``controller_steps × controller_samples``)."""
        return self.settings.controller_steps * self.settings.controller_samples

    @property
    def search_children(self) -> int:
        """Children proposed for the controller over all epochs."""
        return self.settings.epochs * self.per_epoch

    def planned_trials(self) -> int:
        """Trials of the whole search: the controller's children, the derivation's and
        the derived child."""
        return self.search_children + self.settings.derive_samples + 1

    def use_run_data(self, splits: Callable[[], Any]) -> None:
        """The runner hands the run's data (a function returning its ``DataSplits``)."""
        self._splits, self._data = splits, None

    def data(self) -> SearchData:
        """The weight and architecture halves of the run's (default: digits') training
        split (:func:`~nasir.strategies.oneshot.enas_job.search_halves`)."""
        if self._data is None:
            from nasir.backends.torch.data import digits_splits

            splits = self._splits() if self._splits is not None else digits_splits()
            cfg = self.settings
            self._data = search_halves(splits, cfg.batch_size, self.seed, cfg.data_fraction,
                                       self.searcher.device)
        return self._data

    # -- jobs -------------------------------------------------------------------------------
    def job(self) -> EnasWeightsJob | None:
        """Epoch ``epochs_done``'s shared-weight training, once the epochs before it have
        had all their children fed back; else ``None``."""
        k = len(self.proposed)
        if (self.epochs_done >= self.settings.epochs or k != self.epochs_done * self.per_epoch
                or len(self._fed) != k):
            return None
        self._job = EnasWeightsJob(self.searcher, self.ctrl, self.labels, self.data,
                                   self.epochs_done + 1, start=self._job_state)
        return self._job

    def _job_done(self, name: str, result: dict[str, Any]) -> None:
        if name != JOB_NAME:
            raise NasirError(f"ENAS runs no job {name!r}", where="history",
                             hint=f"its only job is {JOB_NAME!r}")
        self.epochs_done += 1
        self.job_history.append(dict(result))
        j = self._job
        self._job_state = j.state_dict() if j is not None and j.steps_done == \
            self.epochs_done else None  # after a replay the runner loads the checkpoint

    # -- propose ----------------------------------------------------------------------------
    def _inputs(self, role: str, batches: int | None) -> dict[str, Any]:
        return {"shared": {"job": JOB_NAME, "steps": self.epochs_done, "role": role,
                           "batches": batches, "seed": self.seed,
                           "fixed": dict(self.searcher.fixed),
                           "batch_size": self.settings.batch_size,
                           "data_fraction": self.settings.data_fraction}}

    def _next(self, k: int) -> tuple[str, list[int], float]:
        """Proposal ``k``: its role, controller indices and entropy (or a refusal)."""
        cfg, fed = self.settings, len(self._fed)
        n, d = self.search_children, cfg.derive_samples
        if k < n:
            epoch, start = k // self.per_epoch, k - k % cfg.controller_samples
            if self.epochs_done <= epoch or fed < start:
                raise AwaitFeedback("ENAS waits for its step's feedback and shared weights")
            idx, _, ent = self.ctrl.sample(self.rng)
            return "child", idx, ent
        if k < n + d:
            if self.epochs_done < cfg.epochs or fed < n:
                raise AwaitFeedback("ENAS derives once the controller has trained")
            greedy = cfg.derive_greedy and k == n
            idx, _, ent = self.ctrl.sample(self.rng, greedy=greedy)
            return "derive", idx, ent
        if k == n + d:
            if fed < n + d:
                raise AwaitFeedback("ENAS picks the derived child once all are scored")
            best = n + int(np.argmax(self._fed[n:n + d]))
            return "derived", list(self.proposed[best][0]), 0.0
        raise SpaceExhausted("the ENAS search is over: its derived child was proposed")

    def _propose(self, n: int) -> list[Assignment]:
        out = []
        for _ in range(n):
            role, idx, ent = self._next(len(self.proposed))
            batches = 1 if role == "child" else self.settings.derive_batches
            self.proposed.append((idx, ent, self._inputs(role, batches)))
            a = {lb: self.options[lb][i] for lb, i in zip(self.labels, idx)}
            out.append(self.space.check(a | self.searcher.fixed))
        return out

    def trial_inputs(self, k: int) -> dict[str, Any]:
        """Proposal ``k``'s shared weights (job, epochs trained) and role: ``child``
        (a controller step's sample), ``derive`` or ``derived``."""
        return self.proposed[k][2] if 0 <= k < len(self.proposed) else {}

    # -- feedback ---------------------------------------------------------------------------
    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        k = len(self._fed)
        if k >= len(self.proposed):
            raise NasirError("ENAS got feedback for a child it did not propose",
                             where="Enas.feedback", hint="feed back in proposal order")
        idx, ent, _ = self.proposed[k]
        want = {lb: self.options[lb][i] for lb, i in zip(self.labels, idx)}
        if any(a[lb] != v for lb, v in want.items()):
            raise NasirError(f"ENAS takes feedback in proposal order; trial {k} was another "
                             "child", where="Enas.feedback", hint="feed back in order")
        score = self.score(metrics)
        acc = score if np.isfinite(score) else 0.0  # a failed child earns nothing
        self._fed.append(acc)
        if k < self.search_children:
            self._controller_feedback(idx, ent, acc)

    def _controller_feedback(self, idx: list[int], ent: float, acc: float) -> None:
        cfg = self.settings
        r = acc + cfg.entropy * ent if cfg.entropy_in == "reward" else acc
        b = self.baseline
        self.baseline = r if b is None else cfg.baseline_decay * b + \
            (1 - cfg.baseline_decay) * r
        self._step.append((idx, r - self.baseline))
        self.step_rewards.append(acc)
        if len(self._step) < cfg.controller_samples:
            return
        with single_thread():  # a batch of a few sequences: threads only contend
            self.copt.zero_grad()
            self.ctrl.loss([s for s, _ in self._step], [adv for _, adv in self._step],
                           entropy=cfg.entropy if cfg.entropy_in == "loss" else 0.0
                           ).backward()
            self.copt.step()
        self.ctrl.invalidate()  # sampling reads a numpy copy of the weights
        self._step = []

    # -- reading ----------------------------------------------------------------------------
    def derived(self) -> Assignment | None:
        """The derived child, once proposed."""
        k = self.search_children + self.settings.derive_samples
        if len(self.proposed) <= k:
            return None
        idx = self.proposed[k][0]
        return self.space.check({lb: self.options[lb][i] for lb, i in zip(self.labels, idx)}
                                | self.searcher.fixed)

    def probabilities(self) -> dict[str, np.ndarray]:
        """The controller's per-decision distributions along its greedy child."""
        return dict(zip(self.labels, self.ctrl.distributions()))

    def state(self) -> dict[str, Any]:
        """The base state plus ``variant``, every setting, what the options ``changed``,
        the shared-weight job's per-epoch records and the plan."""
        s = self.searcher
        return {**super().state(), "variant": s.variant, "settings": self.settings.to_json(),
                "changed": dict(s.changed), "jobs": list(self.job_history),
                "planned_trials": self.planned_trials()}

