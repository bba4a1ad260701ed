"""The latency a trial carries: measured, predicted from the per-layer table, or both.

Under ``latency.policy = "measure"`` every worker compiles and measures its trial's network
(:class:`~nasir.runtime.estimators.LatencyEstimator`); nothing here runs. Under ``predict``
and ``auto`` the workers only train, and the driver's :class:`LatencyRunner` answers latency
through one dedicated measurement process
(:mod:`nasir.runtime.latency_client`, :func:`~nasir.runtime.latency_service.service_main`):

- each trial's *table* latency (the sum of its layers in the per-layer table,
  :class:`~nasir.runtime.latency_table.PolicyLUT`, built once per space and target apart
  from runs, :func:`~nasir.runtime.latency_table.build_table`) is read in the driver when
  the trial is submitted; layers the table lacks are estimated from their MACs
  (``latency_estimated_layers`` counts them). Only while nothing is known yet does a trial
  wait for the process to measure its layers;
- the trial is recorded with the *predicted* latency: the table latency through the run's
  :class:`~nasir.runtime.latency_calibration.Calibration` (refit after every measurement);
- under ``auto`` the whole network is measured for trials that enter the current Pareto
  front or the ``top_k`` by reward and for a random ``calibration`` share, within a
  **budget**: the process's busy seconds stay under ``latency.budget`` × the seconds trials
  have trained so far (on a machine whose cores all train, those seconds are taken from
  training). Waiting requests go front first, then top-k, then calibration, each by reward;
  one whose trial has left the front and the top-k by then is dropped. Layers the table
  lacked are measured last, and those a run did not get to are kept in the table's file for
  the next build (:meth:`~nasir.runtime.latency_table.PolicyLUT.defer`). At the end the
  whole front is measured, again and again until every trial on it is (outside the budget).

A measured trial keeps both numbers: ``latency_ms`` (what it carries, the measured value),
``latency_measured_ms``, ``latency_predicted_ms`` and ``latency_table_ms``;
``latency_source`` says which one ``latency_ms`` is. Its reward is recomputed; the strategy
was fed the prediction when the measurement came later (the driver never waits for one), so
a run under ``auto`` is reproducible in which trials it proposes only as far as the
measurements arrive at the same points.

>>> _on_front({"id": 1, "metrics": {"a": 0.9, "l": 2.0}},
...           [{"id": 2, "metrics": {"a": 0.95, "l": 1.0}}], {"a": "max", "l": "min"})
False
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.latency_calibration import Calibration
from nasir.runtime.latency_measure import PATH_METRICS
from nasir.runtime.latency_table import check_latency_policy as check_latency_policy
from nasir.runtime.latency_table import default_table_path as default_table_path
from nasir.runtime.latency_table import table_path as table_path

__all__ = ["Calibration", "LatencyRunner", "check_latency_policy", "default_table_path",
           "make_latency_runner", "table_path"]

#: metrics a trial carries under ``predict`` / ``auto``
SOURCE, TABLE, PREDICTED, MEASURED = ("latency_source", "latency_table_ms",
                                      "latency_predicted_ms", "latency_measured_ms")
#: why a trial's network is measured, in the order waiting measurements are sent
REASONS = ("front", "top-k", "calibration")


class LatencyRunner:
    """The driver's half of ``predict`` / ``auto``: asks the measurement process, decides
    what to measure and when, keeps the calibration and writes measured latency into the
    store.

    ``pids``: the training processes to keep off the measurement cores (the executor's);
    ``reward`` and ``violation``: the driver's, to rescore a trial whose latency changed.
    """

    def __init__(self, exp: Any, store: Any, reward: Callable[[Mapping[str, Any]], float],
                 violation: Callable[[Mapping[str, Any]], str | None],
                 space: Any = None) -> None:
        from nasir.runtime.latency_client import ServiceClient
        from nasir.runtime.store import json_safe

        self.exp, self.store, self.space = exp, store, space
        self._lut: Any = None  # the table, read here
        self.policy = exp.latency_policy
        self.reward, self.violation = reward, violation
        self.client = ServiceClient(json_safe(exp.to_dict()), store.folder,
                                    lambda: list(self.pids()))
        self.pids: Callable[[], list[int]] = list
        self.calibration = Calibration()
        self.table: dict[int, float] = {}  # trial → table latency
        self.failed: dict[int, str] = {}  # trial → why its prediction failed
        self.held: dict[int, dict[str, Any]] = {}  # worker results waiting for the table
        self.wanted: dict[int, Any] = {}  # trial → assignment: measurement not yet sent
        self.fills: dict[int, Any] = {}  # trial → assignment: layers not yet measured
        self.measure_failed: set[int] = set()
        #: seconds busy measuring / predicting, trials waited for their table, trials trained
        self.measured_s = self.predict_s = self.wait_s = self.trained_s = 0.0
        self._held_at: dict[int, float] = {}
        self.counts = {"predicted": 0, "measured": 0, "new_layers": 0, "dropped": 0,
                       "table_hits": 0, "estimated": 0, "deferred": 0}
        self.estimated: dict[int, int] = {}  # trial → layers estimated, not in the table
        self._trials: Mapping[int, Any] = {}
        self._ending = False
        self._pairs: list[tuple[float, float]] = []
        for t in store.trials("done") + store.trials("infeasible"):
            m = t.get("metrics") or {}
            if m.get(MEASURED) is not None and m.get(TABLE) is not None:
                self._pairs.append((float(m[TABLE]), float(m[MEASURED])))
        self.calibration.fit(self._pairs)

    # -- what goes to the process, and when ------------------------------------------------
    def _affordable(self) -> bool:
        """Whether background work may start now: at the end always, else while the
        process's busy seconds are within the budget of the seconds trials trained."""
        budget, busy = self.exp.latency.budget, self.measured_s + self.predict_s
        return self._ending or (budget > 0 and busy <= budget * self.trained_s)

    def _pump(self) -> None:
        """Send the most useful waiting measurement (else a fill) to an idle process, when
        the budget allows; measurements no longer wanted are dropped on the way."""
        if self.client.inflight or not (self.wanted or self.fills) or not self._affordable():
            return
        ranked = []
        for tid in list(self.wanted):
            rank = self._rank(tid)
            if rank is None:
                del self.wanted[tid]
                self.counts["dropped"] += 1
            else:
                ranked.append((rank, tid))
        if ranked:
            tid = min(ranked)[1]
            self.client.send(("measure", tid, self.wanted.pop(tid)))
        elif self.fills and not self._ending:
            tid = next(iter(self.fills))
            self.client.send(("fill", tid, self.fills.pop(tid)))

    @property
    def busy(self) -> bool:
        """Whether anything is asked, or may be asked now."""
        return bool(self.client.inflight) or (bool(self.wanted or self.fills)
                                              and self._affordable())

    def predict(self, trial: Mapping[str, Any]) -> None:
        """Ask for a trial's table latency (it is computed while the trial trains)."""
        tid = int(trial["id"])
        self.table.pop(tid, None)
        self.failed.pop(tid, None)
        known, missing = self._lookup(trial["assignment"])
        if missing and self.policy == "predict":  # no measurement will correct it: exact
            known = None
        if known is None:  # the trial waits for the process (it is asked at once)
            self.client.send(("predict", tid, trial["assignment"]))
            return
        self.table[tid] = known  # answered here: the trial never waits for the process
        if missing:  # estimated layers: measured in the background, within the budget
            self.estimated[tid] = missing
            self.counts["estimated"] += 1
            self.fills[tid] = trial["assignment"]
            self._pump()
        else:
            self.counts["table_hits"] += 1

    def _table(self) -> Any:
        if self._lut is None:
            from nasir.runtime.latency_table import open_table

            self._lut = open_table(self.exp, self.space)
        return self._lut

    def _lookup(self, assignment: Any) -> tuple[float | None, int]:
        if self.space is None:
            return None, 0
        try:
            return self._table().estimate(self.space.instantiate(self.space.check(assignment)))
        except NasirError:  # a bad assignment or table: the process says why, per trial
            return None, 0

    def poll(self, timeout: float, trials: dict[int, Any]) -> list[dict[str, Any]]:
        """Collect answers for up to ``timeout`` s; returns the held worker results whose
        table latency arrived (ready to record). Measurements go straight into the store."""
        ready: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        self._pump()
        while self.client.inflight:
            msgs = self.client.recv(end - time.monotonic())
            if msgs is None:
                break
            for msg in msgs:
                self._answer(msg, trials, ready)
            self._pump()
        return ready

    def _take_tuning_counts(self, msg: Mapping[str, Any]) -> None:
        """Keep the process's tuning counts (``tuning_*``, sent with every answer and as
        its last word) for :meth:`summary`."""
        self.counts.update({k: v for k, v in msg.items() if k.startswith("tuning_")})

    def _answer(self, msg: Mapping[str, Any], trials: dict[int, Any],
                ready: list[dict[str, Any]]) -> None:
        tid = int(msg["trial"])
        self._take_tuning_counts(msg)
        if msg["kind"] in ("fill", "predict"):
            self.predict_s += float(msg.get("seconds") or 0.0)
            self.counts["new_layers"] += int(msg.get("new_layers") or 0)
        if msg["kind"] == "fill":
            a = (trials.get(tid) or {}).get("assignment")
            if not msg["ok"] and a is not None and self.space is not None:  # next build
                self.counts["deferred"] = self._table().defer([a])
            return
        if msg["kind"] == "predict":
            if msg["ok"]:
                self.table[tid] = float(msg["table_ms"])
            else:
                self.failed[tid] = str(msg.get("reason"))
            if tid in self.held:
                self.wait_s += time.monotonic() - self._held_at.pop(tid, time.monotonic())
                ready.append(self.held.pop(tid))
            return
        self.measured_s += float(msg.get("seconds") or 0.0)
        if msg["ok"] and tid in trials:
            trials[tid] = self._measured(trials[tid], msg)
        elif not msg["ok"]:
            self.measure_failed.add(tid)
            self.store.set_meta(f"latency.failed.{tid}", str(msg.get("reason")))

    # -- trials ----------------------------------------------------------------------------
    def attach(self, r: dict[str, Any]) -> dict[str, Any] | None:
        """A worker's result with the trial's latency added, or ``None`` (held until the
        table answers). A failed prediction fails the trial with the reason."""
        if r.get("status") != "done":
            return r
        tid = int(r["trial"])
        if tid in self.failed:
            return {**r, "status": "failed",
                    "error": f"latency prediction failed: {self.failed.pop(tid)}"}
        if tid not in self.table:
            self.held[tid] = r
            self._held_at[tid] = time.monotonic()
            return None
        table = self.table.pop(tid)
        pred = self.calibration.predict(table)
        self.counts["predicted"] += 1
        m = {**r["metrics"], "latency_ms": pred, SOURCE: "predicted", TABLE: table,
             PREDICTED: pred}
        if tid in self.estimated:  # layers the table lacked, estimated from their MACs
            m["latency_estimated_layers"] = self.estimated.pop(tid)
        return {**r, "metrics": m}

    def recorded(self, t: Mapping[str, Any], trials: dict[int, Any]) -> None:
        """Count a just recorded trial's training seconds (the budget) and decide whether
        its network is measured (``auto`` only). ``trials``: the driver's trials by id; the
        recorded version of ``t`` goes into it here (the driver stores the same right
        after), so that a measurement sent now sees ``t`` finished."""
        self.trained_s += float(t.get("eval_s") or 0.0)
        trials[int(t["id"])] = t
        self._trials = trials
        if self.policy == "auto" and t["status"] == "done" \
                and (t.get("metrics") or {}).get(SOURCE) == "predicted" \
                and self._why(t, [u for u in trials.values() if u["status"] == "done"]):
            self.wanted.setdefault(int(t["id"]), t["assignment"])
        self._pump()

    def _rank(self, tid: int) -> tuple[int, float] | None:
        """Where a waiting measurement stands now (lower goes first), or ``None`` when it no
        longer matters: its trial left the front and the top-k (at the end of a run only
        the front counts)."""
        t = self._trials.get(tid)
        if t is None or t["status"] != "done":
            return None
        done = [u for u in self._trials.values() if u["status"] == "done"]
        if self._ending:  # the front exactly as the run's result reads it
            from nasir.runtime.results import pareto_trials

            front = pareto_trials(list(self._trials.values()), self.exp.objectives)
            why = "front" if any(int(u["id"]) == tid for u in front) else None
        else:
            why = self._why(t, done)
        return None if why is None else (REASONS.index(why), -float(t.get("reward") or 0.0))

    def _why(self, t: Mapping[str, Any], done: Sequence[Mapping[str, Any]]) -> str | None:
        if _on_front(t, done, self.exp.objectives):
            return "front"
        r = t.get("reward")
        if r is not None and sum(1 for u in done if (u.get("reward") or -math.inf) > r) \
                < self.exp.latency.top_k:
            return "top-k"
        draw = random.Random(f"{self.exp.seed}:{t['hash']}").random()
        return "calibration" if draw < self.exp.latency.calibration else None

    def _measured(self, t: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, Any]:
        m = dict(t.get("metrics") or {})
        ms = float(msg["median_ms"])
        if m.get(TABLE) is not None:
            self._pairs.append((float(m[TABLE]), ms))
            if self.calibration.fit(self._pairs):
                self.store.set_meta("latency.calibration", self.calibration.state())
        if self.exp.latency.tuned:  # and how many workloads the database covered
            m.update(latency_tuned=True, **{k: v for k, v in msg.items() if "workloads" in k})
        m.update({"latency_ms": ms, SOURCE: "measured", MEASURED: ms,
                  "latency_cv": msg.get("cv"), "compile_s": msg.get("compile_s"),
                  "latency_cached": bool(msg.get("cached"))})
        m.update({k: msg[k] for k in PATH_METRICS if k in msg})
        self.counts["measured"] += 1
        return self._rescore(t, m)

    def _rescore(self, t: Mapping[str, Any], m: dict[str, Any]) -> dict[str, Any]:
        violation = self.violation(m)
        status = "infeasible" if violation else "done"
        self.store.finish_trial(int(t["id"]), status, metrics=m, reward=self.reward(m),
                                error=violation, eval_s=t.get("eval_s"),
                                cached_from=t.get("cached_from"))
        return self.store.trial(int(t["id"]))

    # -- the end of a run ------------------------------------------------------------------
    def finish(self, trials: dict[int, Any]) -> None:
        """Under ``auto``: keep the layers not yet measured for the next build, wait for the
        measurements still wanted on the front, bring every predicted trial to the final
        calibration, then measure the front until all of it is measured."""
        if self.policy != "auto":
            return
        self._trials, self._ending = trials, True  # waiting measurements off the front drop
        if self.fills and self.space is not None:
            self.counts["deferred"] = self._table().defer(self.fills.values())
        self.fills.clear()
        while self.busy:
            self.poll(1.0, trials)
        for tid, t in list(trials.items()):
            m = t.get("metrics") or {}
            if t["status"] == "done" and m.get(SOURCE) == "predicted" \
                    and m.get(TABLE) is not None:
                pred = self.calibration.predict(float(m[TABLE]))
                trials[tid] = self._rescore(t, {**m, "latency_ms": pred, PREDICTED: pred})
        from nasir.runtime.results import pareto_trials

        for _ in range(len(trials) + 1):
            todo = [t for t in pareto_trials(list(trials.values()), self.exp.objectives)
                    if (t.get("metrics") or {}).get(SOURCE) == "predicted"]
            if not todo:
                break
            for t in todo:
                self.wanted.setdefault(int(t["id"]), t["assignment"])
            while self.busy:
                self.poll(1.0, trials)
            if all(int(t["id"]) in self.measure_failed for t in todo):
                break
        self.store.set_meta("latency.summary", self.summary())

    def summary(self) -> dict[str, Any]:
        """Counts and seconds of this run's latency work (``latency.summary`` in the store):
        ``measure_s`` / ``predict_s`` busy, ``wait_s`` trials waited, ``trained_s`` the
        budget's base, ``deferred`` assignments left in the table for the next build."""
        return {"policy": self.policy, **self.counts, "measure_s": round(self.measured_s, 3),
                "predict_s": round(self.predict_s, 3), "wait_s": round(self.wait_s, 3),
                "trained_s": round(self.trained_s, 3), "budget": self.exp.latency.budget,
                "calibration": self.calibration.state()}

    def close(self) -> None:
        """Stop the measurement process (its final tuning counts, after it saved the work
        still queued to the wanted list, go into :meth:`summary`) and close the table."""
        self._take_tuning_counts(self.client.close() or {})
        if self._lut is not None:
            self._lut.close()
            self._lut = None


def _on_front(t: Mapping[str, Any], done: Sequence[Mapping[str, Any]],
              objectives: Mapping[str, str]) -> bool:
    """Whether no other finished trial of ``done`` dominates ``t`` on ``objectives``."""
    from nasir.pareto import dominates
    from nasir.runtime.results import _val

    senses = list(objectives.values())

    def vec(u: Mapping[str, Any]) -> list[float] | None:
        vals = [_val(u, k) for k in objectives]
        return None if any(v is None for v in vals) else [float(v) for v in vals if v is not None]

    mine = vec(t)
    if mine is None:
        return False
    for u in done:
        other = vec(u) if u["id"] != t["id"] else None
        if other is not None and dominates(other, mine, senses):
            return False
    return True


def make_latency_runner(exp: Any, store: Any, reward: Callable[[Mapping[str, Any]], float],
                        violation: Callable[[Mapping[str, Any]], str | None],
                        space: Any = None) -> LatencyRunner | None:
    """The runner a run needs: ``None`` when its trials carry no latency or measure it in
    their workers (``measure``)."""
    if not exp.needs_latency or exp.latency_policy == "measure":
        return None
    return LatencyRunner(exp, store, reward, violation, space)
