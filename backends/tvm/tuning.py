"""Tune a network's workloads into a :class:`TuningDatabase` and compile from it.

A network lowered to Relax is split by MetaSchedule into workloads (fused TIR functions);
:func:`tune_module` tunes, with ``trials_per_workload`` measured candidates each, only the
workloads the database lacks, and :func:`build_module` compiles the network with the best
record of every workload the database holds (the others keep TVM's default schedule).
Builds and runs of candidates happen in this process by default (``isolated=False``):
MetaSchedule's own builder and runner start worker processes that import TVM — 10 s each
on a loaded 2-core machine, and its builder restarts its pool for every batch.

>>> import tempfile
>>> from nasir.text import parse_graph
>>> from nasir.backends.tvm.compile import compile_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[2, 4, 4]}
...   %1 = relu(%x)
...   return %1
... }''')
>>> db = TuningDatabase("host", tempfile.mkdtemp())
>>> c = compile_graph(g, "host", db=db)  # trials_per_workload=N would tune the missing ones
>>> c.tuning.workloads, c.tuning.hits, c.tuning.tuned, c.run()[0].shape
(1, 0, 0, (1, 2, 4, 4))
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from nasir.backends.tvm.ms_env import check_serialization, import_tensor_intrin, quiet_ms_logs
from nasir.backends.tvm.ms_inprocess import in_process_builder, in_process_runner, rpc_runner
from nasir.backends.tvm.targets import TargetSpec
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.errors import BackendError

__all__ = ["COST_MODELS", "TuningStats", "build_module", "check_serialization",
           "default_cost_model", "graph_tasks", "import_tensor_intrin", "missing_tasks",
           "ms_prepare", "note_missing", "tune_graph", "tune_module", "tune_tasks", "workloads"]

#: MetaSchedule cost models nasir offers: XGBoost (needs ``xgboost``), random, none
COST_MODELS = ("auto", "xgb", "random", "none")


@dataclass(frozen=True)
class TuningStats:
    """What compiling a network against the database did.

    ``workloads``: its distinct tunable workloads; ``hits``: those the database held
    before; ``tuned``: those tuned now; ``waited``: those another process tuned while this
    one waited for them; ``trials``: candidates measured now; ``tuning_s``: seconds spent
    tuning now; ``keys``: the workload keys.
    """

    workloads: int
    hits: int
    tuned: int = 0
    waited: int = 0
    trials: int = 0
    tuning_s: float = 0.0
    cost_model: str = ""
    keys: tuple[str, ...] = ()

    @property
    def hit_rate(self) -> float:
        """``hits / workloads`` (1.0 for a network without tunable workloads).

        >>> TuningStats(workloads=4, hits=3).hit_rate
        0.75
        """
        return self.hits / self.workloads if self.workloads else 1.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (with ``hit_rate``)."""
        d = asdict(self)
        d["keys"] = list(self.keys)
        d["hit_rate"] = self.hit_rate
        return d


#: key → extracted task of workloads compiles in this process found missing (newest 256)
_MISSING: OrderedDict[str, Any] = OrderedDict()


def missing_tasks(keys: Iterable[str]) -> dict[str, Any]:
    """The extracted tasks of ``keys`` that a compile in this process found missing from
    its database (the newest 256 are kept): a background tuner tunes them without lowering
    the network again (on NB201 at 8×8 extraction cost 19 s a network at load 6).

    >>> missing_tasks(["no-such-key"])
    {}
    """
    return {k: _MISSING[k] for k in keys if k in _MISSING}


def note_missing(tasks: dict[str, Any]) -> None:
    """Remember extracted tasks (key → task) found missing from a database, for
    :func:`missing_tasks`."""
    for k, task in tasks.items():
        _MISSING[k] = task
        _MISSING.move_to_end(k)
    while len(_MISSING) > 256:
        _MISSING.popitem(last=False)


def default_cost_model() -> str:
    """``xgb`` when the ``xgboost`` module is installed (``pip install xgboost-cpu``), else
    ``random``."""
    return "xgb" if importlib.util.find_spec("xgboost") else "random"


def ms_prepare(mod: Any, tgt: Any) -> Any:
    """The Relax pipeline before tuning (TVM's ``static_shape_tuning_pipeline``): decompose
    for inference, canonicalise, the zero pipeline (legalise, fuse)."""
    import tvm
    from tvm import relax

    with tgt:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.pipeline.zero_pipeline(),
        ])(mod)


def workloads(mod: Any, tgt: Any) -> dict[str, Any]:
    """Key (MetaSchedule's structural hash) → extracted task for each tunable workload of a
    prepared module (:func:`ms_prepare`)."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    out: dict[str, Any] = {}
    for task in ms.relax_integration.extract_tasks(mod, tgt):
        if task.dispatched[0].attrs and task.dispatched[0].attrs.get("tirx.is_scheduled"):
            continue
        out[str(tvm_ffi.structural_hash(task.dispatched[0]))] = task
    return out


def graph_tasks(graph: Any, db: TuningDatabase, *, batch: int = 1, seed: int = 0
                ) -> dict[str, Any]:
    """Key → MetaSchedule extracted task of every tunable workload of ``graph`` for ``db``'s
    target, lowered exactly as :func:`~nasir.backends.tvm.compile.compile_graph` lowers it
    (so the keys are those its compile looks up; ``task.weight``: how often the network
    calls it)."""
    from nasir.backends.tvm.relax_lowering import lower

    g = graph
    if any(n.type is None for n in g.nodes()):
        from nasir.passes import verify

        g = g.copy()
        verify(g)
    tgt = _tvm_target(db)
    return workloads(ms_prepare(lower(g, None, batch=batch, seed=seed), tgt), tgt)


def tune_module(mod: Any, spec: TargetSpec, db: TuningDatabase, trials_per_workload: int, *,
                cost_model: str = "auto", seed: int = 0, isolated: bool = False,
                population: int | None = None, min_repeat_ms: int = 20,
                trials_per_round: int = 16, remote: Any = None) -> TuningStats:
    """Tune the workloads of a prepared module (:func:`ms_prepare`) that ``db`` lacks.

    Each missing workload gets ``trials_per_workload`` measured candidates (MetaSchedule's
    evolutionary search with ``population`` candidates per generation — default
    ``clip(4 × trials, 16, 512)``: with a few trials the search's own cost, not measuring,
    dominates — and the
    ``cost_model``: ``auto`` = :func:`default_cost_model`); the best ``db.top_k`` are saved.
    A workload another process is tuning is waited for, then read (``waited``).
    ``trials_per_workload=0`` tunes nothing and only counts the hits. ``remote``: a
    :class:`~nasir.backends.tvm.rpc.RemoteDevice` on which candidates are timed (built
    here, uploaded through TVM RPC): how a target that does not run here is tuned.
    """
    from tvm.s_tir import meta_schedule as ms

    if cost_model not in COST_MODELS:
        raise BackendError(f"unknown cost model {cost_model!r}",
                           hint=f"use one of {', '.join(COST_MODELS)}")
    if trials_per_workload < 0:
        raise BackendError(f"trials_per_workload must be >= 0, got {trials_per_workload}")
    if spec.cross and trials_per_workload and remote is None:
        raise BackendError(f"tuning for {spec} needs the device", where=str(spec),
                           hint="give the device (remote=RemoteDevice(...), --rpc/--key) to "
                           "time candidates on, or compile from the database only "
                           "(trials_per_workload=0)")
    per_round = max(1, min(trials_per_round, trials_per_workload or 1))
    cm = _cost_model(cost_model, db, trials_per_workload, per_round)
    tgt = _tvm_target(db)
    tasks = workloads(mod, tgt)
    keys = tuple(sorted(tasks))
    missing = [k for k in keys if not db.has(k)]
    note_missing({k: tasks[k] for k in missing})
    base = TuningStats(len(keys), len(keys) - len(missing), cost_model=cm, keys=keys)
    if not missing or not trials_per_workload:
        return base
    check_serialization()
    import_tensor_intrin()
    t0 = time.perf_counter()
    with db.claim(missing):
        todo = [k for k in missing if not db.has(k)]
        if not todo:
            return TuningStats(len(keys), base.hits, waited=len(missing), cost_model=cm,
                               keys=keys)
        trials = _tune(ms, [tasks[k] for k in todo], todo, db, tgt, trials_per_workload,
                       cm, seed, isolated, population, per_round,
                       _runner(ms, isolated, min_repeat_ms, None, remote))
    return TuningStats(len(keys), base.hits, tuned=len(todo), waited=len(missing) - len(todo),
                       trials=trials, tuning_s=time.perf_counter() - t0, cost_model=cm,
                       keys=keys)


def tune_graph(graph: Any, db: TuningDatabase, trials_per_workload: int, *, batch: int = 1,
               cost_model: str = "auto", seed: int = 0, remote: Any = None) -> TuningStats:
    """Tune the workloads of ``graph`` that ``db`` lacks, without building the network: what
    a background tuner runs so that a later :func:`~nasir.backends.tvm.compile.compile_graph`
    of the graph (or of any graph sharing its workloads) hits. ``trials_per_workload=0``
    only counts the hits (how much of the graph the database covers); ``remote``: time the
    candidates on that device (:func:`tune_module`).

    >>> import tempfile
    >>> from nasir.text import parse_graph
    >>> g = parse_graph('''graph @g {
    ...   %x = input() {shape=[2, 4, 4]}
    ...   %1 = relu(%x)
    ...   return %1
    ... }''')
    >>> tune_graph(g, TuningDatabase("host", tempfile.mkdtemp()), 0).hit_rate
    0.0
    """
    import tvm

    from nasir.backends.tvm.relax_lowering import lower

    g = graph
    if any(n.type is None for n in g.nodes()):
        from nasir.passes import verify

        g = g.copy()
        verify(g)
    mod = ms_prepare(lower(g, None, batch=batch, seed=seed),
                     tvm.target.Target(db.target_json()))
    return tune_module(mod, db.spec, db, trials_per_workload, cost_model=cost_model, seed=seed,
                       remote=remote)


def _cost_model(cost_model: str, db: TuningDatabase, trials: int, per_round: int) -> str:
    if cost_model == "auto":
        cost_model = db.cost_model
    if cost_model not in COST_MODELS:
        raise BackendError(f"unknown cost model {cost_model!r}", where=repr(db),
                           hint=f"use one of {', '.join(COST_MODELS)}")
    if cost_model == "auto":  # a model is trained after a round and used in the next only
        cost_model = default_cost_model() if trials > per_round else "random"
    return cost_model


def tune_tasks(tasks: dict[str, Any], db: TuningDatabase, trials_per_workload: int, *,
               cost_model: str = "auto", seed: int = 0, window: Any = None,
               remote: Any = None,
               min_repeat_ms: int = 20, trials_per_round: int = 16) -> int:
    """Tune exactly these extracted tasks (key → task, as :func:`workloads` gives them) into
    ``db`` with ``trials_per_workload`` measured candidates each, in this process; returns
    how many candidates were measured. The caller decides what to tune and holds the claims
    it wants (a background tuner: :mod:`nasir.runtime.background_tuning`). ``window``: a
    context-manager factory entered around every batch of candidates being timed (e.g. a
    quiet window keeping training off the cores). ``remote``: time candidates on that
    :class:`~nasir.backends.tvm.rpc.RemoteDevice` instead (``window`` is then not used).

    >>> import tempfile
    >>> tune_tasks({}, TuningDatabase("host", tempfile.mkdtemp()), 2)
    0
    """
    if not tasks or trials_per_workload <= 0:
        return 0
    from tvm.s_tir import meta_schedule as ms

    check_serialization()
    import_tensor_intrin()
    per_round = max(1, min(trials_per_round, trials_per_workload))
    cm = _cost_model(cost_model, db, trials_per_workload, per_round)
    keys = sorted(tasks)
    return _tune(ms, [tasks[k] for k in keys], keys, db, _tvm_target(db), trials_per_workload,
                 cm, seed, False, None, per_round,
                 _runner(ms, False, min_repeat_ms, window, remote))


def _runner(ms: Any, isolated: bool, min_repeat_ms: int, window: Any, remote: Any
            ) -> tuple[Any, list[str] | None]:
    """The runner timing candidates, and the list its failed RPC connections go to."""
    if remote is not None:
        errors: list[str] = []
        return rpc_runner(remote.connect, 3, min_repeat_ms, errors), errors
    if isolated:
        return ms.runner.LocalRunner(timeout_sec=600), None
    return in_process_runner(3, min_repeat_ms, window), None


def _tune(ms: Any, tasks: list[Any], keys: list[str], db: TuningDatabase, tgt: Any,
          trials: int, cm: str, seed: int, isolated: bool, population: int | None,
          per_round: int, runner: tuple[Any, list[str] | None]) -> int:
    runner, unreached = runner
    if population is None:
        population = min(512, max(16, 4 * trials))
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=max(population, 2), init_min_unmeasured=max(8, population // 4),
        genetic_num_iters=2)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nasir-ms-") as wd, quiet_ms_logs():
        ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, wd, strategy=strategy, seed=seed)
        mem = ms.database.MemoryDatabase()
        builder = ms.builder.LocalBuilder(timeout_sec=600) if isolated else \
            in_process_builder()
        ms.tune.tune_tasks(
            tasks=ctxs, task_weights=weights, work_dir=wd,
            max_trials_global=trials * len(ctxs), max_trials_per_task=trials,
            num_trials_per_iter=per_round, builder=builder, runner=runner,
            database=mem, cost_model=cm, task_scheduler="round-robin")
        per_s = (time.perf_counter() - t0) / max(1, len(ctxs))
        measured = len(mem.get_all_tuning_records())
        if unreached:  # not the workload's fault: record nothing, tune it when reachable
            raise BackendError(f"tuning could not reach the device: {unreached[0]}",
                               hint="check the RPC tracker / server and its key, or tune "
                                    "without a remote device")
        for key, ctx in zip(keys, ctxs, strict=True):
            wl = mem.commit_workload(ctx.mod)
            recs = [r.as_json() for r in mem.get_top_k(wl, max(db.top_k, 1))]
            db.save(key, wl.as_json(), recs, task=str(ctx.task_name), trials=trials,
                    tuning_s=per_s, cost_model=cm)
    return measured


def _tvm_target(db: TuningDatabase) -> Any:
    import tvm

    return tvm.target.Target(db.target_json())


def build_module(mod: Any, db: TuningDatabase, keys: tuple[str, ...] | None = None) -> Any:
    """Compile a prepared module (:func:`ms_prepare`) with the database's best record of each
    of its workloads (``keys``: those to look up; default all of the module's)."""
    import tvm
    from tvm import relax

    tgt = _tvm_target(db)
    if keys is None:
        keys = tuple(workloads(mod, tgt))
    mem = db.load(keys, top=1)
    with tgt, mem:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    return tvm.compile(mod, target=tgt)
