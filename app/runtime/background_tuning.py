"""Tune, in the background of a run, the workloads its measured networks found untuned.

With ``latency.tuned = true`` the measurement process
(:func:`~nasir.runtime.latency_service.service_main`) compiles every network it measures from
the target's :class:`~nasir.backends.tvm.tuning_db.TuningDatabase`; a workload the database
lacks keeps TVM's default schedule, and the network is *offered* to a :class:`BackgroundTuner`.
When the process has no request waiting, the tuner takes one step: it tunes *one* workload
(keyed by MetaSchedule's structural hash, as the database keys them; its task is the one
the compile extracted, :func:`~nasir.backends.tvm.tuning.missing_tasks`, or else extracted
again from the network the way :func:`~nasir.backends.tvm.tuning.tune_graph` does) with
``latency.tune_trials`` measured candidates into the shared database, where later
candidates, workers and runs of the target compile from it.

Why in the measurement process rather than a process of its own: it is already pinned to
``latency.cores`` away from training; being one process, its tuning never times candidates
while it times a network (two timers on one core would spoil both); and the candidates it
times run inside the same quiet window (:func:`~nasir.runtime.latency_service.quiet_window`)
as its measurements, so training never shares those cores while it *measures*. The price:
a request that arrives while a workload is being tuned waits for that one workload (a few
seconds at a few trials); the driver itself never waits on tuning.

Dedupe: a workload is tuned once per target. Here: each key is queued once per process.
Across processes: the database's lock of the workload (an ``flock`` held while it is tuned,
released if the process dies) is taken without waiting — a workload another process is
tuning is skipped (``busy``) and found in the database by the next compile — and a workload
already in the database is never tuned again.

>>> import tempfile
>>> from nasir.backends.tvm.compile import compile_graph
>>> from nasir.backends.tvm.tuning_db import TuningDatabase
>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[2, 4, 4]}
...   %1 = relu(%x)
...   return %1
... }''')
>>> db = TuningDatabase("host", tempfile.mkdtemp())
>>> tuner = BackgroundTuner(db, trials=0)      # tune_trials = 0: never tunes
>>> tuner.offer(g, compile_graph(g, "host", db=db).tuning), tuner.step()
(0, False)
>>> tuning_metrics(compile_graph(g, "host", db=db).tuning)
{'latency_tuned_workloads': 0, 'latency_untuned_workloads': 1}

Work that outlives its process: the database folder keeps a *wanted list*
(:meth:`~nasir.backends.tvm.tuning_db.TuningDatabase.add_wanted`; each line a network's nasir
JSON and the workload keys it lacked). A run's tuner writes what it still has queued when the
run ends (:meth:`BackgroundTuner.persist`); a ``latency.policy = "measure"`` worker, which
must not tune (it would share cores with training), appends its compiles' missing workloads
(:class:`WantedOffers`); the next tuner created on the database takes the list, drops what
the database now has, and queues the rest (``tuning_wanted_loaded``).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

from nasir.backends.tvm.tuning import graph_tasks as graph_tasks
from nasir.errors import StoreError

__all__ = ["BackgroundTuner", "WantedOffers", "graph_tasks", "tuning_metrics"]


def _unseen(keys: Any, offered: set[str], db: Any) -> tuple[str, ...]:
    """``keys``, each once and in order, that were neither offered here before nor are in
    the database ``db`` (what a tuner or a wanted list still has to take)."""
    return tuple(k for k in dict.fromkeys(keys) if k not in offered and not db.has(k))


def tuning_metrics(stats: Any) -> dict[str, int]:
    """A trial's metrics from a compile's :class:`~nasir.backends.tvm.tuning.TuningStats`:
    how many of its network's workloads the database covered when it was compiled
    (``latency_tuned_workloads``) and how many kept TVM's default schedule
    (``latency_untuned_workloads``). Empty for a compile without a database."""
    if stats is None:
        return {}
    return {"latency_tuned_workloads": int(stats.hits + stats.tuned + stats.waited),
            "latency_untuned_workloads": int(stats.workloads - stats.hits - stats.tuned
                                             - stats.waited)}


class BackgroundTuner:
    """The queue of workloads a run's compiles found untuned, tuned one :meth:`step` at a
    time into ``db`` with ``trials`` measured candidates each (0: never tunes).

    ``window``: a context-manager factory entered while candidates are timed (the
    measurement process passes its quiet window). :meth:`summary` gives the counts and
    seconds a run reports (``latency.summary``): ``tuning_queued`` (workloads queued),
    ``tuning_tuned``, ``tuning_busy`` (another process was tuning it), ``tuning_skipped``
    (in the database by its turn), ``tuning_failed``, ``tuning_pending``, ``tuning_trials``,
    ``tuning_s`` (tuning seconds), ``tuning_extract_s`` (extracting tasks),
    ``tuning_wanted_loaded`` (workloads queued from the database's wanted list at start;
    also in ``tuning_queued``) and ``tuning_wanted_saved`` (written back by :meth:`persist`).

    With ``trials`` > 0 (and ``load_wanted``) it takes the database's wanted list when
    created; a list it cannot read is a warning (the run goes on) and is moved aside.
    """

    def __init__(self, db: Any, trials: int, *, window: Callable[[], Any] | None = None,
                 batch: int = 1, seed: int = 0, load_wanted: bool = True) -> None:
        self.db, self.trials, self.window = db, int(trials), window
        self.batch, self.seed = batch, seed
        self._graphs: deque[tuple[Any, tuple[str, ...], int]] = deque()
        self._tasks: dict[str, Any] = {}  # extracted, waiting for their turn
        self._source: dict[str, tuple[Any, int]] = {}  # key → (its network, batch), to persist
        self._offered: set[str] = set()  # every key queued here (once per process)
        self.counts = {"queued": 0, "tuned": 0, "busy": 0, "skipped": 0, "failed": 0,
                       "trials": 0, "wanted_loaded": 0, "wanted_saved": 0}
        self.tuning_s = self.extract_s = 0.0
        self.errors: list[str] = []
        if self.trials > 0 and load_wanted:
            self._load_wanted()

    def _load_wanted(self) -> None:
        from nasir.errors import NasirError
        from nasir.serialize import graph_from_json

        try:
            entries = self.db.take_wanted()
        except StoreError as e:
            self._warn(e)
            return
        for no, entry in enumerate(entries, 1):
            keys = _unseen(entry["keys"], self._offered, self.db)
            if not keys:
                continue
            try:
                graph = graph_from_json(entry["graph"], f"wanted[{no}].graph")
            except Exception as err:  # a network this version no longer reads
                self.counts["failed"] += len(keys)
                why = err.message if isinstance(err, NasirError) else f"{err!r}"
                self._warn(StoreError(f"wanted list entry {no}: {why}",
                                      where=self.db.wanted_path,
                                      hint="its workloads are queued again by the next "
                                           "compile that needs them"))
                continue
            self._queue_graph(graph, keys, int(entry["batch"]))
            self.counts["wanted_loaded"] += len(keys)

    def _warn(self, err: Exception) -> None:
        warnings.warn(f"background tuning: {err}", stacklevel=3)
        if len(self.errors) < 5:
            self.errors.append(f"{type(err).__name__}: {str(err).strip()[:200]}")

    def _queue_graph(self, graph: Any, keys: tuple[str, ...], batch: int) -> None:
        self._graphs.append((graph, keys, batch))
        self._source.update((k, (graph, batch)) for k in keys)
        self._offered.update(keys)
        self.counts["queued"] += len(keys)

    @property
    def pending(self) -> int:
        """Workloads queued and not yet taken."""
        return len(self._tasks) + sum(len(keys) for _, keys, _ in self._graphs)

    def offer(self, graph: Any, stats: Any) -> int:
        """Queue the workloads of ``graph`` that its compile (``stats``: its
        :class:`~nasir.backends.tvm.tuning.TuningStats`) found missing and that are neither
        queued here already nor in the database now; returns how many were queued."""
        if self.trials <= 0 or stats is None:
            return 0
        from nasir.backends.tvm.tuning import missing_tasks

        new = _unseen(stats.keys, self._offered, self.db)
        known = missing_tasks(new)  # extracted by the compile itself, in this process
        self._tasks.update(known)
        self._source.update((k, (graph, self.batch)) for k in known)
        self._offered.update(known)
        self.counts["queued"] += len(known)
        rest = tuple(k for k in new if k not in known)
        if rest:
            self._queue_graph(graph, rest, self.batch)
        return len(new)

    def step(self) -> bool:
        """Do one piece of work — extract a queued network's tasks, or tune one workload —
        and return ``True``; ``False`` when nothing is queued."""
        if not self._tasks:
            if not self._graphs:
                return False
            graph, keys, batch = self._graphs.popleft()
            t0 = time.perf_counter()
            try:
                tasks = graph_tasks(graph, self.db, batch=batch, seed=self.seed)
            except Exception as e:  # a network that no longer lowers: its workloads fail
                self._fail(len(keys), e)
                return True
            finally:
                self.extract_s += time.perf_counter() - t0
            self._tasks.update({k: tasks[k] for k in keys if k in tasks})
            self._fail(sum(1 for k in keys if k not in tasks), None)
            return True
        key = min(self._tasks)
        task = self._tasks.pop(key)
        if self.db.has(key):
            self.counts["skipped"] += 1
            return True
        try:
            with self.db.claim([key], timeout_s=0):
                if self.db.has(key):
                    self.counts["skipped"] += 1
                    return True
                from nasir.backends.tvm.tuning import tune_tasks

                t0 = time.perf_counter()
                try:
                    n = tune_tasks({key: task}, self.db, self.trials, seed=self.seed,
                                   window=self.window)
                finally:
                    self.tuning_s += time.perf_counter() - t0
        except StoreError as e:
            if "stayed locked" not in str(e):
                raise
            self.counts["busy"] += 1  # another process holds it: it will be in the database
            return True
        except Exception as e:  # a workload MetaSchedule cannot tune keeps its default
            self._fail(1, e)
            return True
        self.counts["tuned"] += 1
        self.counts["trials"] += n
        return True

    def _fail(self, n: int, err: Exception | None) -> None:
        self.counts["failed"] += n
        if err is not None and len(self.errors) < 5:
            self.errors.append(f"{type(err).__name__}: {str(err).strip()[:200]}")

    def stop(self, err: Exception) -> None:
        """Give up tuning for this run (``err``: why, e.g. the database went bad): the
        queue is dropped as failed and nothing more is queued."""
        self._fail(self.pending, err)
        self.trials = 0
        self._graphs.clear()
        self._tasks.clear()
        self._source.clear()

    def persist(self) -> int:
        """Write the work still queued to the database's wanted list (one line per network,
        its nasir JSON and the keys it still lacks) and drop it here; returns the workloads
        written. Called when the run ends; a list that cannot be written is a warning."""
        from nasir.serialize import graph_to_json

        keys = set(self._tasks).union(*(ks for _, ks, _ in self._graphs))
        by_graph: dict[int, tuple[Any, int, list[str]]] = {}
        for k in sorted(keys):
            src = self._source.get(k)
            if src is not None and not self.db.has(k):
                by_graph.setdefault(id(src[0]), (src[0], src[1], []))[2].append(k)
        entries: list[dict[str, Any]] = [{"graph": graph_to_json(g), "keys": ks, "batch": b}
                   for g, b, ks in by_graph.values()]
        self._graphs.clear()
        self._tasks.clear()
        self._source.clear()
        try:
            self.db.add_wanted(entries)
        except StoreError as e:
            self._warn(e)
            return 0
        n = sum(len(e["keys"]) for e in entries)
        self.counts["wanted_saved"] += n
        return n

    def drain(self, budget_s: float | None = None) -> int:
        """Step until nothing is queued (or ``budget_s`` seconds passed); returns the steps
        taken. For scripts and tests; a run steps only while its process is idle."""
        end = None if budget_s is None else time.monotonic() + budget_s
        steps = 0
        while (end is None or time.monotonic() < end) and self.step():
            steps += 1
        return steps

    def summary(self) -> dict[str, Any]:
        """Counts and seconds so far, each name prefixed ``tuning_``."""
        out: dict[str, Any] = {f"tuning_{k}": v for k, v in self.counts.items()}
        out.update(tuning_pending=self.pending, tuning_s=round(self.tuning_s, 3),
                   tuning_extract_s=round(self.extract_s, 3))
        return out


class WantedOffers:
    """Records, without tuning, the workloads a compile found missing: appends them to
    ``db``'s wanted list for the next run's :class:`BackgroundTuner`. A ``latency.policy =
    "measure"`` worker passes one as ``measure_network``'s ``tuner``: tuning there would
    share cores with training. Each key is written once per process."""

    def __init__(self, db: Any, *, batch: int = 1) -> None:
        self.db, self.batch = db, int(batch)
        self._offered: set[str] = set()
        self._warned = False

    def offer(self, graph: Any, stats: Any) -> int:
        """Append ``graph`` with the keys of ``stats`` (its compile's
        :class:`~nasir.backends.tvm.tuning.TuningStats`) that are neither in the database nor
        written here before; returns how many keys were written."""
        if stats is None:
            return 0
        new = list(_unseen(stats.keys, self._offered, self.db))
        if not new:
            return 0
        from nasir.serialize import graph_to_json

        try:
            wrote = self.db.add_wanted([{"graph": graph_to_json(graph), "keys": new,
                                         "batch": self.batch}])
        except StoreError as e:  # the trial goes on; only the wish is lost
            if not self._warned:
                self._warned = True
                warnings.warn(f"background tuning: {e}", stacklevel=2)
            return 0
        self._offered.update(new)
        return len(new) if wrote else 0
