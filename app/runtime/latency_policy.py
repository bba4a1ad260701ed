"""The latency a trial carries: measured, predicted from the per-layer table, or both.

Under ``latency.policy = "measure"`` every worker compiles and measures its trial's network
(:class:`~nasir.runtime.estimators.LatencyEstimator`); nothing here runs. Under ``predict``
and ``auto`` the workers only train, and the driver's :class:`LatencyRunner` answers latency
through one dedicated measurement process
(:func:`~nasir.runtime.latency_service.service_main`):

- each trial's *table* latency (the sum of its layers in the per-layer table,
  :class:`~nasir.backends.tvm.lut.LatencyLUT`) is read in the driver when the trial is
  submitted; layers the table lacks are estimated from their MACs (per op, from the layers
  seen so far; ``latency_estimated_layers`` counts them) and the measurement process
  compiles and times them in the background, once, for every later candidate and run. Only
  while nothing is known yet does a trial wait for the process to measure its layers;
- the trial is recorded with the *predicted* latency: the table latency through the run's
  :class:`Calibration` (a linear fit table → measured, refit after every measurement);
- under ``auto`` the whole network is compiled and measured for every trial that enters the
  current Pareto front or the ``top_k`` by reward, for a random ``calibration`` share, and at
  the end for the whole front, again and again until every trial on it is measured.

A measured trial keeps both numbers: ``latency_ms`` (what it carries, the measured value),
``latency_measured_ms``, ``latency_predicted_ms`` and ``latency_table_ms``;
``latency_source`` says which one ``latency_ms`` is. Its reward is recomputed; the strategy
was fed the prediction when the measurement came later (the driver never waits for one), so
a run under ``auto`` is reproducible in which trials it proposes only as far as the
measurements arrive at the same points.

Cores: the measurement process has CPUs of its own, and training threads are moved off them
while it times a network (:mod:`nasir.runtime.latency_service`, with the limits of that).

>>> c = Calibration()
>>> c.predict(2.0), c.fit([(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]), round(c.predict(4.0), 6)
(2.0, True, 8.0)
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nasir.errors import NasirError

__all__ = ["Calibration", "LatencyRunner", "check_latency_policy", "default_table_path",
           "make_latency_runner", "table_path"]

#: metrics a trial carries under ``predict`` / ``auto``
SOURCE, TABLE, PREDICTED, MEASURED = ("latency_source", "latency_table_ms",
                                      "latency_predicted_ms", "latency_measured_ms")


def default_table_path() -> str:
    """``$NASIR_CACHE_DIR/latency_lut.sqlite`` (default ``~/.cache/nasir``): one table per
    user, shared by every run and worker (rows are keyed by target and batch)."""
    root = os.environ.get("NASIR_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "nasir")
    return os.path.join(root, "latency_lut.sqlite")


def table_path(exp: Any) -> str:
    """The per-layer table a run uses: ``latency.table``, else the user's shared one
    (tuned layers in a table of their own)."""
    if exp.latency.table:
        return str(exp.latency.table)
    path = default_table_path()
    return path.replace(".sqlite", "_tuned.sqlite") if exp.latency.tuned else path


def check_latency_policy(exp: Any) -> None:
    """What can be checked before a run starts: ``tuned`` needs the target's tuning
    database, and a table needs somewhere writable to live."""
    from nasir.runtime.experiment import ConfigError

    lat = exp.latency
    if lat.tuned:
        from nasir.backends.tvm import resolve_target

        t = exp.target
        from nasir.runtime.latency_service import tuned_compile_options

        tuned_compile_options(resolve_target(
            t.spec or {"host": "host", "cuda": "cuda", "rpc": "aarch64"}[t.kind]))
    if not exp.needs_latency or exp.latency_policy == "measure":
        return
    path = table_path(exp)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the latency table's folder {folder}: "
                          f"{e.strerror or e}", where="latency.table",
                          hint="give latency.table a writable path or set NASIR_CACHE_DIR"
                          ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the latency table's folder {folder} is not writable",
                          where="latency.table",
                          hint="give latency.table a writable path or set NASIR_CACHE_DIR")


class Calibration:
    """Table latency → measured latency, refit from ``(table_ms, measured_ms)`` pairs.

    Three points or more: least squares ``a · table + b`` (kept when ``a > 0``); fewer, or a
    fit that would invert the ranking: the median ratio ``measured / table``; none: the
    identity. ``refits`` counts fits.
    """

    def __init__(self) -> None:
        self.slope, self.intercept, self.points, self.refits = 1.0, 0.0, 0, 0

    def fit(self, pairs: Sequence[tuple[float, float]]) -> bool:
        """Refit on ``pairs``; returns whether there was anything to fit."""
        pts = [(float(x), float(y)) for x, y in pairs
               if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
        if not pts:
            return False
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        a, b = float(np.median(y / x)), 0.0
        if len(pts) >= 3 and float(np.ptp(x)) > 0:
            fa, fb = np.polyfit(x, y, 1)
            if fa > 0:
                a, b = float(fa), float(fb)
        self.slope, self.intercept, self.points = a, b, len(pts)
        self.refits += 1
        return True

    def predict(self, table_ms: float) -> float:
        """The calibrated latency (never below a hundredth of the table's)."""
        return max(self.slope * float(table_ms) + self.intercept, 0.01 * float(table_ms))

    def state(self) -> dict[str, Any]:
        """What the store keeps (``latency.calibration``)."""
        return {"slope": self.slope, "intercept": self.intercept, "points": self.points,
                "refits": self.refits}


# -- the driver's side -------------------------------------------------------------------------
class LatencyRunner:
    """The driver's half of ``predict`` / ``auto``: asks the measurement process, decides
    what to measure, keeps the calibration and writes measured latency into the store.

    ``pids``: the training processes to keep off the measurement cores (the executor's);
    ``reward`` and ``violation``: the driver's, to rescore a trial whose latency changed.
    """

    def __init__(self, exp: Any, store: Any, reward: Callable[[Mapping[str, Any]], float],
                 violation: Callable[[Mapping[str, Any]], str | None],
                 space: Any = None) -> None:
        self.exp, self.store, self.space = exp, store, space
        self._lut: Any = None  # the table, read here when it knows every layer
        self.policy = exp.latency_policy
        self.reward, self.violation = reward, violation
        self.pids: Callable[[], list[int]] = list
        self.calibration = Calibration()
        self.table: dict[int, float] = {}  # trial → table latency
        self.failed: dict[int, str] = {}  # trial → why its prediction failed
        self.held: dict[int, dict[str, Any]] = {}  # worker results waiting for the table
        self.queue: deque[tuple[str, int, Any]] = deque()  # predictions go first
        self.wanted: set[int] = set()  # trials queued or in flight for measurement
        self.measure_failed: set[int] = set()
        self.inflight: deque[tuple[str, int, Any]] = deque()  # sent, in order
        self.deaths = 0
        self.proc: Any = None
        self.conn: Any = None
        #: seconds busy measuring / predicting, and seconds trials waited for their table
        self.measured_s = self.predict_s = self.wait_s = 0.0
        self._held_at: dict[int, float] = {}
        self.counts = {"predicted": 0, "measured": 0, "new_layers": 0, "dropped": 0,
                       "table_hits": 0, "estimated": 0}
        self.estimated: dict[int, int] = {}  # trial → layers estimated, not in the table
        self._trials: Mapping[int, Any] = {}
        self._ending = False
        self._ctx = mp.get_context("spawn")
        self._pairs: list[tuple[float, float]] = []
        for t in store.trials("done") + store.trials("infeasible"):
            m = t.get("metrics") or {}
            if m.get(MEASURED) is not None and m.get(TABLE) is not None:
                self._pairs.append((float(m[TABLE]), float(m[MEASURED])))
        self.calibration.fit(self._pairs)

    # -- the process ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        from nasir.runtime.latency_service import service_main
        from nasir.runtime.store import json_safe

        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(
            target=service_main, name="nasir-latency",
            args=(child, json_safe(self.exp.to_dict()), self.store.folder, os.getpid()),
            daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _send(self) -> None:
        """Send what may go now: predictions at once (they are cheap once the table knows
        the layers, and a trial waits for its own), a measurement only to an idle process."""
        while self.queue and (self.queue[0][0] == "predict" or not self.inflight):
            if self.proc is None or not self.proc.is_alive():
                self._spawn()
            req = self.queue.popleft()
            if req[0] == "fill" and self._ending:
                continue
            if req[0] == "measure" and not self._still_wanted(req[1]):
                self.wanted.discard(req[1])
                self.counts["dropped"] += 1
                continue
            self.inflight.append(req)
            self.conn.send((req[0], req[1], req[2], list(self.pids())))

    @property
    def busy(self) -> bool:
        """Whether anything is asked or waiting to be asked."""
        return bool(self.inflight or self.queue)

    def predict(self, trial: Mapping[str, Any]) -> None:
        """Ask for a trial's table latency (it is computed while the trial trains)."""
        tid = int(trial["id"])
        self.table.pop(tid, None)
        self.failed.pop(tid, None)
        known, missing = self._lookup(trial["assignment"])
        if missing and self.policy == "predict":  # no measurement will correct it: exact
            known = None
        if known is not None:  # answered here: the trial never waits for the process
            self.table[tid] = known
            if missing:  # estimated layers: the process measures them in the background
                self.estimated[tid] = missing
                self.counts["estimated"] += 1
                self.queue.append(("fill", tid, trial["assignment"]))
                self._send()
            else:
                self.counts["table_hits"] += 1
            return
        self.queue.appendleft(("predict", tid, trial["assignment"]))
        self._send()

    def _lookup(self, assignment: Any) -> tuple[float | None, int]:
        if self.space is None:
            return None, 0
        try:
            if self._lut is None:
                from nasir.runtime.latency_service import open_table

                self._lut = open_table(self.exp, self.space)
            return self._lut.estimate(self.space.instantiate(self.space.check(assignment)))
        except NasirError:  # a bad assignment or table: the process says why, per trial
            return None, 0

    def _want(self, trial: Mapping[str, Any]) -> None:
        tid = int(trial["id"])
        if tid not in self.wanted:
            self.wanted.add(tid)
            self.queue.append(("measure", tid, trial["assignment"]))
            self._send()

    def poll(self, timeout: float, trials: dict[int, Any]) -> list[dict[str, Any]]:
        """Collect answers for up to ``timeout`` s; returns the held worker results whose
        table latency arrived (ready to record). Measurements go straight into the store."""
        ready: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        while self.inflight:
            msg = None
            try:
                if self.conn.poll(max(0.0, end - time.monotonic())):
                    msg = self.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is None and self.proc.is_alive():
                break
            if msg is None:  # the process died: its requests once more, then they fail
                self.conn.close()
                self.proc = self.conn = None
                self.deaths += 1
                lost = list(self.inflight)
                self.inflight.clear()
                if self.deaths <= 1:
                    self.queue.extendleft(reversed(lost))
                    self._send()
                    continue
                for kind, tid, _ in lost:
                    self._answer({"kind": kind, "trial": tid, "ok": False, "reason":
                                  "the latency process died twice"}, trials, ready)
                self.deaths = 0
                self._send()
                continue
            self.inflight.popleft()
            self.deaths = 0
            self._answer(msg, trials, ready)
            self._send()
        return ready

    def _answer(self, msg: Mapping[str, Any], trials: dict[int, Any],
                ready: list[dict[str, Any]]) -> None:
        tid = int(msg["trial"])
        self.counts.update({k: v for k, v in msg.items() if k.startswith("tuning_")})
        if msg["kind"] == "fill":
            self.predict_s += float(msg.get("seconds") or 0.0)
            self.counts["new_layers"] += int(msg.get("new_layers") or 0)
            return
        if msg["kind"] == "predict":
            self.predict_s += float(msg.get("seconds") or 0.0)
            if msg["ok"]:
                self.table[tid] = float(msg["table_ms"])
                self.counts["new_layers"] += int(msg.get("new_layers") or 0)
            else:
                self.failed[tid] = str(msg.get("reason"))
            if tid in self.held:
                self.wait_s += time.monotonic() - self._held_at.pop(tid, time.monotonic())
                ready.append(self.held.pop(tid))
            return
        self.measured_s += float(msg.get("seconds") or 0.0)
        self.wanted.discard(tid)
        if msg["ok"] and tid in trials:
            trials[tid] = self._measured(trials[tid], msg)
        elif not msg["ok"]:
            self.measure_failed.add(tid)
            self.store.set_meta(f"latency.failed.{tid}", str(msg.get("reason")))

    # -- trials --------------------------------------------------------------------------------
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

    def recorded(self, t: Mapping[str, Any], trials: Mapping[int, Any]) -> None:
        """Decide whether a just recorded trial's network is measured (``auto`` only)."""
        if self.policy != "auto" or t["status"] != "done":
            return
        if (t.get("metrics") or {}).get(SOURCE) != "predicted":
            return
        self._trials = trials
        why = self._why(t, [u for u in trials.values() if u["status"] == "done"])
        if why:
            self._want(t)

    def _still_wanted(self, tid: int) -> bool:
        """Whether a queued measurement still matters now: its trial may have left the front
        and the top-k while it waited (at the end of a run only the front counts)."""
        t = self._trials.get(tid)
        if t is None or t["status"] != "done":
            return False
        if self._ending:  # the front exactly as the run's result reads it
            from nasir.runtime.results import pareto_trials

            front = pareto_trials(list(self._trials.values()), self.exp.objectives)
            return any(int(u["id"]) == tid for u in front)
        done = [u for u in self._trials.values() if u["status"] == "done"]
        return self._why(t, done) is not None

    def _why(self, t: Mapping[str, Any], done: Sequence[Mapping[str, Any]]) -> str | None:
        r = t.get("reward")
        if r is not None and sum(1 for u in done if (u.get("reward") or -math.inf) > r) \
                < self.exp.latency.top_k:
            return "top-k"
        if _on_front(t, done, self.exp.objectives):
            return "front"
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
        self.counts["measured"] += 1
        return self._rescore(t, m)

    def _rescore(self, t: Mapping[str, Any], m: dict[str, Any]) -> dict[str, Any]:
        violation = self.violation(m)
        status = "infeasible" if violation else "done"
        self.store.finish_trial(int(t["id"]), status, metrics=m, reward=self.reward(m),
                                error=violation, eval_s=t.get("eval_s"),
                                cached_from=t.get("cached_from"))
        return self.store.trial(int(t["id"]))

    # -- the end of a run --------------------------------------------------------------------
    def finish(self, trials: dict[int, Any]) -> None:
        """Under ``auto``: wait for the measurements asked for, bring every predicted
        trial to the final calibration, then measure the front until all of it is
        measured."""
        if self.policy != "auto":
            return
        self._trials, self._ending = trials, True  # queued measurements off the front drop
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
                self._want(t)
            while self.busy:
                self.poll(1.0, trials)
            if all(int(t["id"]) in self.measure_failed for t in todo):
                break
        self.store.set_meta("latency.summary", self.summary())

    def summary(self) -> dict[str, Any]:
        """Counts and seconds of this run's latency work (``latency.summary`` in the store)."""
        return {"policy": self.policy, **self.counts, "measure_s": round(self.measured_s, 3),
                "predict_s": round(self.predict_s, 3), "wait_s": round(self.wait_s, 3),
                "calibration": self.calibration.state()}

    def close(self) -> None:
        """Stop the measurement process."""
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(2)
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        self.proc = self.conn = None
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
