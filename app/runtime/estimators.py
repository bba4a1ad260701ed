"""One estimator protocol for the runtime, with adapters over the backends and benchmarks.

An estimator scores one architecture: ``evaluate(space, assignment, *, seed) -> metrics``.
Metrics are a flat JSON-able dict (``accuracy`` in [0, 1], ``latency_ms``, ``params``,
``macs`` …); an estimator raises for a failed evaluation (the worker records the reason).

Adapters: :class:`StaticEstimator` (params / MACs from the analysis pass),
:class:`NB201TableEstimator` (NAS-Bench-201 CIFAR-10 accuracy, deterministic),
:class:`TrainingEstimator` (the torch backend's training estimator on digits),
:class:`~nasir.runtime.weight_sharing.OneShotEstimator` (weights inherited from one trained
supernet, ``--estimator oneshot``),
:class:`LatencyEstimator` (TVM-compiled, measured on a target, through the TVM backend's
latency cache) and :class:`CombinedEstimator` (merges several; the main job is training +
latency, scored with the MnasNet reward by the driver).

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> m = NB201TableEstimator().evaluate(sp, sp.reference("resnet"), seed=0)
>>> round(m["accuracy"], 4)
0.8632
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from nasir.errors import BackendError, NasirError, TrialError
from nasir.runtime.faults import FaultEstimator
from nasir.runtime.training_estimator import TrainingEstimator, load_run_data, save_weights
from nasir.space import Space

__all__ = [
    "CombinedEstimator",
    "Estimator",
    "LatencyEstimator",
    "NB201TableEstimator",
    "StaticEstimator",
    "TrainingEstimator",
    "build_estimator",
    "fault_estimator",
    "load_run_data",
    "save_weights",
]


@runtime_checkable
class Estimator(Protocol):
    """Anything with ``evaluate(space, assignment, *, seed) -> dict``."""

    name: str

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """Score one architecture."""
        ...


class StaticEstimator:
    """Parameters, MACs and activation bytes from :func:`nasir.passes.analysis.analyze`.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("nb201")
    >>> StaticEstimator().evaluate(sp, sp.reference("resnet"), seed=0)["params"] > 0
    True
    """

    name = "static"

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """``params``, ``macs``, ``activation_bytes``."""
        from nasir.passes.analysis import analyze

        info = analyze(space.instantiate(assignment))
        return {"params": int(info["params"]), "macs": int(info["macs"]),
                "activation_bytes": int(info["activation_bytes"])}


class NB201TableEstimator:
    """NAS-Bench-201 CIFAR-10 test accuracy from the shipped table (as a fraction).

    ``simulate_s`` makes each query take that long (like the simulated wall-clock of
    tabular-benchmark runners), so executors, timeouts and crash recovery can be exercised
    with realistic trial durations and exactly reproducible results.
    """

    name = "nb201"

    def __init__(self, simulate_s: float = 0.0) -> None:
        from nasir.bench import NB201Table

        if not simulate_s >= 0:
            raise NasirError(f"simulate_s must be >= 0, got {simulate_s}",
                             where="estimator.options.simulate_s")
        self.table = NB201Table.load()
        self.simulate_s = float(simulate_s)

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """``accuracy`` in [0, 1]; needs the ``nb201`` space."""
        if space.name != "nb201":
            raise NasirError(f"the nb201 table estimator needs the nb201 space, not {space.name}",
                             hint="use --space nb201 or --estimator training")
        if self.simulate_s:
            time.sleep(self.simulate_s)
        return {"accuracy": self.table.accuracy(assignment) / 100.0}


class LatencyEstimator:
    """TVM-measured latency of the architecture on a target (``latency_ms`` = median).

    Successful measurements go through the TVM backend's :class:`LatencyCache`, keyed by
    canonical hash and target: an architecture measured once (in this run or, with a shared
    cache file, any earlier one) is not measured again — which is also what makes a resumed
    run see the same latency for trials that finished before a crash.
    """

    name = "latency"

    def __init__(self, target: str | Mapping[str, Any] = "host", *, repeats: int = 20,
                 cache_path: str | None = None, rpc: tuple[str, int, str | None] | None = None,
                 min_repeat_ms: float = 2.0, tuned: bool = False,
                 paths: tuple[str, ...] = ("tvm",), settle_s: float = 0.0) -> None:
        from nasir.backends.tvm import LatencyCache, MeasureConfig, resolve_target

        self.target = resolve_target(target)
        self.config = MeasureConfig(repeats=int(repeats), warmup=2,
                                    min_repeat_ms=float(min_repeat_ms),
                                    settle_s=float(settle_s))
        self.cache = LatencyCache(cache_path) if cache_path else None
        self.remote = None
        if rpc is not None:
            from nasir.backends.tvm import RemoteDevice

            self.remote = RemoteDevice(rpc[0], int(rpc[1]), rpc[2])
        self.paths = tuple(paths)  # the deployment paths the latency is the fastest of
        if self.paths != ("tvm",) and (rpc is not None or not self.target.host_cpu):
            raise NasirError(f"latency paths {'+'.join(self.paths)} run on this machine's CPU, "
                             f"not on {self.target}", where="latency.paths",
                             hint="use latency.paths ['tvm'] (or 'auto') for this target")
        self.build: dict[str, Any] = {}  # compile from the target's tuning database
        self.wanted: Any = None  # where its compiles' missing workloads are written
        if tuned:
            from nasir.runtime.latency_measure import tuned_compile_options

            if rpc is not None:
                raise NasirError("tuned latency is measured here; through RPC it is not "
                                 "wired yet", where="latency.tuned", hint="drop latency.tuned")
            self.build = tuned_compile_options(self.target)
            from nasir.runtime.background_tuning import WantedOffers

            # no tuning here (it would share cores with training): the next run's
            # measurement process tunes what this worker's compiles lacked
            self.wanted = WantedOffers(self.build["db"], batch=self.config.batch)

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """``latency_ms``, ``latency_cv``, ``compile_s`` (and whether it came from the cache)."""
        from nasir.backends.tvm import measure

        g = space.instantiate(assignment)
        t0 = time.perf_counter()
        if self.build or self.paths != ("tvm",):
            from nasir.runtime.latency_measure import PATH_METRICS, measure_network

            try:
                m = measure_network(g, self.target, self.config, self.cache, build=self.build,
                                    tuner=self.wanted, paths=self.paths)
            except BackendError as e:  # a path that would not build: this trial fails
                m = {"ok": False, "reason": e.message}
            if not m["ok"]:
                raise TrialError(f"latency measurement failed: {m['reason']}",
                                 where=str(self.target))
            return {"latency_ms": float(m["median_ms"]), "latency_source": "measured",
                    "latency_measured_ms": float(m["median_ms"]), "latency_cv": m["cv"],
                    "compile_s": m["compile_s"], "latency_cached": bool(m["cached"]),
                    **({"latency_tuned": True} if self.build else {}),
                    "latency_s": time.perf_counter() - t0,
                    **{k: v for k, v in m.items() if "workloads" in k  # DB coverage
                       or k in PATH_METRICS}}
        r = measure(g, self.target, self.config, remote=self.remote, cache=self.cache)
        if not r.ok:
            raise TrialError(f"latency measurement failed: {r.reason}",
                             where=str(self.target))
        return {"latency_ms": float(r.median_ms or 0.0), "latency_source": "measured",
                "latency_measured_ms": float(r.median_ms or 0.0), "latency_cv": r.cv,
                "compile_s": r.compile_s, "latency_cached": bool(r.cached),
                "latency_s": time.perf_counter() - t0,
                **({"latency_speed": r.extra["speed"]["speed"]} if "speed" in r.extra else {})}


class CombinedEstimator:
    """Runs several estimators and merges their metrics (later ones win on clashes)."""

    name = "combined"

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Hand the worker's task to the parts that want it (a user evaluator)."""
        for part in self.parts:
            if hasattr(part, "set_task"):
                part.set_task(task)

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """Merged metrics; raises :class:`TrialError` on a non-finite number."""
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update(part.evaluate(space, assignment, seed=seed))
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise TrialError(f"metric {k} is {v}", hint="training diverged; lower the "
                                 "learning rate or the number of epochs")
        return out


def build_estimator(exp: Mapping[str, Any], run_dir: str | None = None) -> CombinedEstimator:
    """The estimator an experiment (as stored, a dict) asks for.

    Static analysis always runs first (cheap, and constraints on params/MACs use it).
    """
    from nasir.runtime.experiment import Experiment

    e = Experiment.from_dict(exp)
    parts: list[Any] = [StaticEstimator()]
    kind = e.estimator.kind
    if kind == "nb201":
        try:
            parts.append(NB201TableEstimator(**e.estimator.options))
        except TypeError as err:
            raise NasirError(f"bad nb201 estimator option: {err}", where="--estimator-opt",
                             hint="valid options: simulate_s") from None
    elif kind == "training":
        from nasir.runtime.experiment import TRAINING_DEFAULTS

        parts.append(TrainingEstimator(
            {**TRAINING_DEFAULTS, **e.estimator.options},
            threads=max(1, int(e.executor.cpus_per_trial)),
            weights_dir=os.path.join(run_dir, "weights") if run_dir else None,
            data=load_run_data(e), device=_device(e)))
    elif kind == "evaluator":
        from nasir.runtime.evaluator import FunctionEstimator

        ev = e.evaluator
        parts.append(FunctionEstimator(
            str(ev.function), options=ev.options, objectives=e.objectives, prune=ev.prune,
            prune_startup=ev.prune_startup, prune_warmup=ev.prune_warmup,
            data=load_run_data(e), device=_device(e),
            weights_dir=os.path.join(run_dir, "weights") if run_dir else None))
    elif kind == "shared":  # ENAS's children, scored with the run's shared weights
        from nasir.runtime.shared_weights import shared_estimator

        parts.append(shared_estimator(e, run_dir, _device(e)))
    elif kind == "oneshot":
        from nasir.runtime.weight_sharing import OneShotEstimator

        parts.append(OneShotEstimator(e.estimator.options,
                                      threads=max(1, int(e.executor.cpus_per_trial)),
                                      run_dir=run_dir, data=load_run_data(e),
                                      device=_device(e)))
    elif kind == "fault":  # fault injection over the NB201 table (nasir.runtime.faults)
        try:
            parts.append(fault_estimator(**e.estimator.options))
        except TypeError as err:
            raise NasirError(f"bad fault estimator option: {err}", where="--estimator-opt",
                             hint="valid options: faults, sleep_s, simulate_s, "
                                  "memory_budget_bytes") from None
    else:
        raise NasirError(f"unknown estimator {kind!r}",
                         hint="use --estimator training, nb201, oneshot or shared")
    if e.needs_latency and e.latency_policy == "measure":  # else: the driver's
        parts.append(latency_estimator(e, run_dir))  # LatencyRunner (latency_policy)
    return CombinedEstimator(parts)


def fault_estimator(faults: Mapping[str, float] | None = None, *, sleep_s: float = 30.0,
                    simulate_s: float = 0.0, memory_budget_bytes: int = 1024) -> FaultEstimator:
    """``--estimator fault``: a :class:`~nasir.runtime.faults.FaultEstimator` over the NB201
    table (``simulate_s`` is the table's), its compile and rpc faults run by
    :class:`LatencyEstimator`. Its keywords are the estimator's options."""
    return FaultEstimator(faults, inner=NB201TableEstimator(simulate_s), latency=LatencyEstimator,
                          sleep_s=sleep_s, memory_budget_bytes=memory_budget_bytes)


def _device(e: Any) -> str:
    """The device setting trials train on: a pool worker's own GPU
    (``NASIR_WORKER_DEVICE``) wins over the run's ``device``."""
    from nasir.backends.torch.device import worker_device

    return worker_device(e.device)


def latency_estimator(e: Any, run_dir: str | None) -> LatencyEstimator:
    """The latency estimator for an :class:`Experiment`'s target."""
    t = e.target
    spec = t.spec or {"host": "host", "cuda": "cuda", "rpc": "aarch64"}[t.kind]
    cache = os.path.join(run_dir, "latency.sqlite") if run_dir else None
    rpc = (t.rpc_host, t.rpc_port, t.rpc_key) if t.kind == "rpc" else None
    return LatencyEstimator(spec, repeats=t.repeats, cache_path=cache, rpc=rpc,
                            tuned=e.latency.tuned, paths=e.latency_paths,
                            settle_s=e.latency.settle_s)
