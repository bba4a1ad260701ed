"""The search loop: propose, evaluate through an executor, record, feed back — resumably.

Determinism. Trials are numbered in proposal order and their feedback reaches the strategy
in that order, whatever order workers finish in. Trial ``k`` is proposed only once the
feedback of trials ``< k - W`` has been given (``W`` = the executor's slots), so what the
strategy sees when it proposes trial ``k`` depends on the seed and ``W`` only, never on
timing. With deterministic estimators a run ends with the same trials however often it was
interrupted and resumed.

Crash safety. A proposal (the trial row and the strategy events it caused), a result, and a
feedback (the ``fed`` flag and its events) are each one SQLite transaction. On resume the
strategy is rebuilt by replaying its stored events, trials that were pending or running
are run again, and finished trials whose feedback was not yet given are fed in order.
Failing trials (exception, NaN, compile error, timeout, dead worker, out of GPU memory) are
recorded as ``failed`` with the reason and the search goes on; a candidate over a constraint,
or one whose predicted training memory is above its device's free memory (the worker says
``infeasible``), is recorded ``infeasible``.

>>> import tempfile
>>> from nasir.runtime.experiment import Experiment
>>> exp = Experiment.from_dict({"space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
...     "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
...     "objectives": {"accuracy": "max", "params": "min"},
...     "executor": {"kind": "inprocess"}, "budget": {"trials": 4}, "seed": 3})
>>> summary = run_search(exp, tempfile.mkdtemp())
>>> summary["counts"]["done"], summary["status"]
(4, 'finished')
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from nasir.errors import NasirError, StoreError, located
from nasir.runtime.data_parallel import job_runner
from nasir.runtime.executors import Executor, make_executor
from nasir.runtime.experiment import Experiment
from nasir.runtime.jobs import JobRunner, give_run_data, refuse_duplicate
from nasir.runtime.latency_policy import LatencyRunner, make_latency_runner
from nasir.runtime.run_dirs import _remove_run, default_run_dir, run_label
from nasir.runtime.store import FINAL, RunStore
from nasir.runtime.strategy_names import STRATEGY_ALIASES, resolve_strategy, strategy_options
from nasir.runtime.worker import build_space, trial_seed

__all__ = ["STRATEGY_ALIASES", "Driver", "default_run_dir", "resolve_strategy", "run_label",
           "run_search", "start_run", "strategy_options"]

Callback = Callable[[str, Mapping[str, Any]], None]


class Driver:
    """Runs (or resumes) the search stored in ``store`` with experiment ``exp``."""

    def __init__(self, store: RunStore, exp: Experiment, *, executor: Executor | None = None,
                 callback: Callback | None = None, space: Any = None) -> None:
        from nasir.passes.hashing import assignment_hash
        from nasir.strategies import make_strategy
        from nasir.strategies.rewards import make_reward

        self.store = store
        self.exp = exp
        self.exp_dict = exp.to_dict()
        #: what a user should hear about the run's space (e.g. its file changed)
        self.notes: list[str] = []
        folder = getattr(store, "folder", None)  # a Driver without a store checks options
        self.space = space if space is not None else build_space(self.exp_dict, folder,
                                                                 self.notes)
        self._hash = assignment_hash
        try:
            name = resolve_strategy(exp.strategy.name)
            opts = strategy_options(exp, name)
            self.strategy = make_strategy(name, self.space, seed=exp.seed, objective="reward",
                                          **opts)
        except NasirError as e:
            raise located(e, "experiment option strategy.name / strategy.options") from None
        except TypeError as e:  # an option named like an argument: name, seed, objective
            raise NasirError(f"bad strategy option: {e}",
                             where="experiment option strategy.options",
                             hint="name, space, seed and objective are not options") from None
        #: the strategy's registry name and the options it was made with (data-parallel
        #: ranks make it again from them)
        self.strategy_name, self.strategy_opts = name, opts
        try:
            self.reward = make_reward(exp.reward_spec())
        except NasirError as e:
            raise located(e, "experiment option reward") from None
        self.executor = executor
        #: predicted / measured latency under ``latency.policy`` predict and auto
        self.latency: LatencyRunner | None = None
        self.callback = callback or (lambda kind, info: None)
        self._written = 0
        ev = exp.evaluator
        self._pruning = exp.estimator.kind == "evaluator" and ev.prune != "none"
        self._trials: dict[int, Any] = {}
        self._order: list[int] = []
        #: the strategy found no new architecture (a small space used up)
        self.exhausted: str | None = None
        #: canonical hashes proposed so far (a one-shot strategy must not repeat one)
        self._proposed: set[str] = set()
        self.jobs: JobRunner | None = None

    # -- helpers ------------------------------------------------------------------------------
    def _new_events(self) -> list[dict[str, Any]]:
        ev = self.strategy.history[self._written:]
        self._written = len(self.strategy.history)
        return list(ev)

    def _static_violation(self, a: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        from nasir.runtime.estimators import StaticEstimator

        static_keys = ("params", "macs", "activation_bytes")
        if not any(k in static_keys for k in self.exp.constraints):
            return {}, None
        m = StaticEstimator().evaluate(self.space, a, seed=0)
        return m, self._violation(m)

    def _violation(self, metrics: Mapping[str, Any]) -> str | None:
        for key, bound in self.exp.constraints.items():
            v = metrics.get(key)
            if v is not None and float(v) > bound:
                return f"{key} = {float(v):.4g} > {bound:.4g}"
        return None

    def _feedback_metrics(self, t: Mapping[str, Any]) -> dict[str, Any]:
        if t["status"] == "done":
            return {**t["metrics"], "reward": t["reward"], "status": "ok"}
        return {"status": t["status"]}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Search until the budget is spent; returns a summary (see :func:`summarize`)."""
        store, exp = self.store, self.exp
        events = store.events()
        if events:
            self.strategy.replay(events)
        self._written = len(self.strategy.history)
        self.jobs = job_runner(store, self.strategy, self.callback, self._new_events,
                               exp, getattr(store, "folder", None), self.strategy_name,
                               self.strategy_opts)
        give_run_data(self.strategy, exp)
        trials = {t["id"]: t for t in store.trials()}
        self._proposed = {t["hash"] for t in trials.values()}
        order = sorted(trials)
        self._trials, self._order = trials, order
        fed = sum(1 for t in trials.values() if t["fed"])
        if any(not trials[i]["fed"] for i in order[:fed]):
            raise NasirError("the run store's feedback is not a prefix of its trials",
                             where=store.folder, hint="the store was edited by hand?")
        ex = self.executor or make_executor(self.exp_dict, store.folder)
        self.executor = ex
        lat = self.latency = make_latency_runner(exp, store, self.reward, self._violation,
                                                 self.space)
        if lat is not None:
            lat.pids = ex.pids
        window = max(1, ex.slots)
        t_start = time.time()
        elapsed0 = float(store.meta("elapsed_s", 0.0) or 0.0)
        store.set_meta("status", "running")
        resubmit = store.reset_unfinished()
        deadline = (None if exp.budget.wall_time_s is None
                    else t_start + exp.budget.wall_time_s - elapsed0)
        self.callback("start", {"total": exp.budget.trials, "done": fed,
                                "resumed": bool(order), "rerun": resubmit,
                                "deadline": deadline})
        try:
            for tid in resubmit:
                self._submit(trials[tid], order.index(tid))
            while True:
                out_of_time = (exp.budget.wall_time_s is not None
                               and elapsed0 + time.time() - t_start >= exp.budget.wall_time_s)
                # trial k is proposed right after the feedback of trial k - W: never earlier
                # (it would see less) and never later (it would see more), whatever the timing
                self._fill(order, trials, fed, window, out_of_time)
                while fed < len(order) and trials[order[fed]]["status"] in FINAL:
                    self._feed(trials[order[fed]])
                    fed += 1
                    store.set_meta("elapsed_s", elapsed0 + time.time() - t_start)
                    self.callback("trial", {"trial": trials[order[fed - 1]], "done": fed,
                                            "best": store.best()})
                    self._fill(order, trials, fed, window, out_of_time)
                if fed == len(order) and (len(order) >= exp.budget.trials or out_of_time
                                          or self.exhausted):
                    break
                if fed < len(order) and trials[order[fed]]["status"] not in FINAL:
                    results = ex.poll(0.1 if lat is not None and lat.busy else 1.0)
                    if lat is not None:
                        results += lat.poll(0.0, trials)
                    for r in results:
                        trials[r["trial"]] = self._record(trials[r["trial"]], r)
            if lat is not None:  # auto: the final front is measured
                lat.finish(trials)
        except KeyboardInterrupt:
            store.set_meta("status", "interrupted")
            raise
        finally:
            ex.close()
            if lat is not None:
                lat.close()
                store.set_meta("latency.summary", lat.summary())
            store.set_meta("elapsed_s", elapsed0 + time.time() - t_start)
        store.set_meta("status", "finished")
        summary = summarize(store)
        self.callback("end", summary)
        return summary

    def _fill(self, order: list[int], trials: dict[int, Any], fed: int, window: int,
              out_of_time: bool) -> None:
        from nasir.strategies.base import AwaitFeedback
        from nasir.strategies.dedup import SpaceExhausted

        while (len(order) < self.exp.budget.trials and not out_of_time
               and len(order) - fed < window and not self.exhausted):
            try:
                if self.jobs is not None:
                    self.jobs.run_pending()
                t = self._propose(fed)
            except SpaceExhausted as e:  # the search ends early; what ran is kept
                self.exhausted = e.message
                self.store.set_meta("exhausted", e.message)
                self.callback("note", {"text": f"{e.message}; the search stops here"})
                break
            except AwaitFeedback as e:  # proposes again once the trials in flight are fed
                if fed == len(order):
                    raise NasirError(f"strategy {self.strategy.name} waits for feedback "
                                     "with no trial in flight", hint=e.message) from None
                break
            trials[t["id"]] = t
            order.append(t["id"])

    def _propose(self, fed: int) -> dict[str, Any]:
        k = len(self._order)  # this trial's place in proposal order
        a = self.strategy.propose(1)[0]
        h = self._hash(self.space, a)
        refuse_duplicate(self.strategy, h, self._proposed, a)
        self._proposed.add(h)
        tid = self.store.add_trial(a.to_json(), h, self._new_events())
        if self._pruning:  # a pruner compares with the trials fed so far: fixed per trial
            self.store.set_meta(f"peers.{tid}", fed)
        t = self.store.trial(tid)
        static, violation = self._static_violation(a)
        if violation is not None:
            self.store.finish_trial(tid, "infeasible", metrics=static, error=violation)
            return self.store.trial(tid)
        # a trial with inputs (weights to start from …) is not the same as one without
        prior = None if self.strategy.trial_inputs(k) else self.store.finished_by_hash(h)
        if prior is not None:
            self.store.finish_trial(tid, "done", metrics=prior["metrics"],
                                    reward=prior["reward"], worker=prior["worker"],
                                    eval_s=0.0, cached_from=prior["id"])
            return self.store.trial(tid)
        self._submit(t, k)
        return self.store.trial(tid)

    def _submit(self, t: Mapping[str, Any], k: int) -> None:
        assert self.executor is not None
        self.store.start_trial(t["id"])
        task = {"trial": t["id"], "assignment": t["assignment"],
                "seed": trial_seed(self.exp.seed, t["hash"])}
        inputs = self.strategy.trial_inputs(k)
        if inputs:  # what the strategy says trial k starts from (Strategy.trial_inputs)
            task["inputs"] = inputs
        if self._pruning:
            task["peers"] = self._peers(int(self.store.meta(f"peers.{t['id']}", 0) or 0))
        self.executor.submit(task)
        if self.latency is not None:
            self.latency.predict(t)

    def _peers(self, n: int) -> dict[str, list[float]]:
        """Intermediate values (step → values) of the first ``n`` trials that finished."""
        out: dict[str, list[float]] = {}
        for tid in self._order[:n]:
            t = self._trials.get(tid) or self.store.trial(tid)
            curve = (t.get("metrics") or {}).get("intermediate") if t["status"] == "done" \
                else None
            for step, v in dict(curve or {}).items():
                if v is not None:
                    out.setdefault(str(step), []).append(float(v))
        return out

    def _record(self, t: Mapping[str, Any], r: Mapping[str, Any]) -> dict[str, Any]:
        tid = t["id"]
        if self.latency is not None:
            got = self.latency.attach(dict(r))
            if got is None:  # held until its table latency arrives
                return dict(t)
            r = got
        if r["status"] == "done":
            metrics = dict(r["metrics"])
            violation = self._violation(metrics)
            reward = self.reward(metrics)
            status = "infeasible" if violation else "done"
            self.store.finish_trial(tid, status, metrics=metrics, reward=reward,
                                    error=violation, worker=r.get("worker"),
                                    eval_s=r.get("eval_s"))
        elif r["status"] == "infeasible":  # the worker found it cannot fit its device
            self.store.finish_trial(tid, "infeasible", metrics=dict(r.get("metrics") or {}),
                                    error=r.get("error"), worker=r.get("worker"),
                                    eval_s=r.get("eval_s"))
        else:
            self.store.finish_trial(tid, "failed", error=r.get("error") or "unknown error",
                                    worker=r.get("worker"), eval_s=r.get("eval_s"))
        if int(r.get("attempt", 1)) > 1:
            self.store.set_meta(f"retried.{tid}", int(r["attempt"]))
        out = self.store.trial(tid)
        if self.latency is not None:
            self.latency.recorded(out, self._trials)
        return out

    def _feed(self, t: Mapping[str, Any]) -> None:
        self.strategy.feedback(t["assignment"], self._feedback_metrics(t))
        self.store.mark_fed(t["id"], self._new_events())


def summarize(store: RunStore) -> dict[str, Any]:
    """Counts, best trial, status and elapsed time of a run."""
    return {"run": store.folder, "status": store.meta("status"), "counts": store.counts(),
            "best": store.best(), "elapsed_s": store.meta("elapsed_s", 0.0)}


def run_search(exp: Experiment, run_dir: str, *, executor: Executor | None = None,
               callback: Callback | None = None, base_dir: str | None = None,
               prepared: Any = None) -> dict[str, Any]:
    """Check the experiment (:func:`~nasir.runtime.preflight.prepare`; ``base_dir``: the
    folder relative paths in it are taken from), create a run in ``run_dir`` and search;
    returns the summary. A start that fails leaves no run folder behind."""
    store, driver = start_run(exp, run_dir, executor=executor, callback=callback,
                              base_dir=base_dir, prepared=prepared)
    try:
        return driver.run()
    finally:
        store.close()


def start_run(exp: Experiment, run_dir: str, *, executor: Executor | None = None,
              callback: Callback | None = None, base_dir: str | None = None,
              prepared: Any = None) -> tuple[RunStore, Driver]:
    """Check, create the run folder and its store, keep the space; ``(store, driver)``."""
    from nasir.runtime.preflight import prepare
    from nasir.runtime.run_space import keep_space

    p = prepared if prepared is not None else prepare(exp, base_dir)
    existed = os.path.exists(run_dir)
    store = RunStore.create(run_dir, p.exp.to_dict())
    try:
        try:
            keep_space(run_dir, p.exp.to_dict(), p.space, p.source)
        except OSError as e:
            raise StoreError(f"cannot write the run's space into {run_dir}: "
                             f"{e.strerror or e}", where=run_dir,
                             hint="free disk space or pick another --run-dir") from None
        return store, Driver(store, p.exp, executor=executor, callback=callback,
                             space=p.space)
    except BaseException:
        store.close()
        _remove_run(run_dir, existed)
        raise
