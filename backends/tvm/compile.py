"""Compile a nasir graph for a target: lowering, optional MetaSchedule tuning, export.

>>> from nasir.text import parse_graph
>>> g = parse_graph('''graph @g {
...   %x = input() {shape=[2, 4, 4]}
...   %1 = relu(%x)
...   return %1
... }''')
>>> c = compile_graph(g, "host", batch=3)
>>> c.run()[0].shape
(3, 2, 4, 4)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from nasir.backends.tvm.relax_lowering import lower
from nasir.backends.tvm.targets import TargetSpec, resolve_target
from nasir.errors import BackendError, NasirError
from nasir.graph import Graph

if TYPE_CHECKING:
    from nasir.backends.tvm.rpc import RemoteDevice
    from nasir.backends.tvm.tuning import TuningStats
    from nasir.backends.tvm.tuning_db import TuningDatabase

__all__ = ["Compiled", "compile_graph", "example_inputs", "tune", "tuning_records"]


def example_inputs(shapes: list[tuple[int, ...]], batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random float32 inputs ``(batch, *shape)`` for each per-sample shape."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *s)).astype(np.float32) for s in shapes]


@dataclass
class Compiled:
    """A compiled network: the Relax VM executable and what it was built for."""

    executable: Any
    target: TargetSpec
    batch: int
    input_shapes: list[tuple[int, ...]]
    compile_s: float
    tuned: bool = False
    tuning: TuningStats | None = None
    _vm: Any = field(default=None, repr=False)

    def export(self, path: str) -> str:
        """Write the library to ``path`` (``.so`` needs a compiler for the target's triple;
        ``.tar`` holds the object files and needs none). Returns ``path``."""
        kwargs: dict[str, Any] = {}
        if self.target.cross and not path.endswith(".tar"):
            cc = self.target.cross_compiler()
            if cc is None:
                raise BackendError(
                    f"no cross compiler for {self.target.config.get('mtriple')} is installed",
                    hint="install e.g. g++-aarch64-linux-gnu / g++-arm-linux-gnueabihf, or "
                         "export to a .tar of object files",
                )
            from tvm.contrib import cc as tvm_cc

            kwargs["fcompile"] = tvm_cc.cross_compiler(cc)
        self.executable.export_library(path, **kwargs)
        return path

    def run(self, inputs: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Run locally (host targets only) and return the output as numpy arrays."""
        import tvm
        from tvm import relax

        if self.target.cross:
            raise BackendError(f"{self.target} code cannot run on this machine",
                               hint="measure it on a device through RPC")
        dev = tvm.cpu() if self.target.device == "cpu" else tvm.cuda()
        if self._vm is None:
            self._vm = relax.VirtualMachine(self.executable, dev)
        if inputs is None:
            inputs = example_inputs(self.input_shapes, self.batch)
        out = self._vm["main"](*[tvm.runtime.tensor(x, dev) for x in inputs])
        return [out.numpy()]


def tune(mod: Any, target: TargetSpec, trials: int, work_dir: str | None = None, *,
         build_timeout_s: float = 600.0, run_timeout_s: float = 600.0) -> Any:
    """MetaSchedule-tune ``mod`` for ``target`` with a global trial budget and build it.

    The steps of TVM's ``static_shape_tuning_pipeline`` (decompose for inference, the zero
    pipeline, ``tune_relax``, apply the tuning database), with MetaSchedule's local builder
    and runner given generous timeouts (their 30 s default includes starting a worker
    process that imports TVM — measured at 150 s on a loaded 2-core machine — and so killed
    every build there) and the XGBoost cost model when ``xgboost`` is installed, else the random
    model (evolutionary search still measures every candidate). Tuning measures candidates
    on this machine, so it is available for targets that run here. The number of measured
    candidates is logged in ``work_dir``'s database (``database_tuning_record.json``).
    """
    import importlib.util

    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    if target.cross:
        raise BackendError(f"tuning for {target} needs the device; tuning runs locally",
                           hint="tune on the device or drop tune_trials")
    if trials < 1:
        raise BackendError(f"tune_trials must be >= 1, got {trials}")
    from nasir.backends.tvm.ms_env import check_serialization

    check_serialization()
    cfg = dict(target.config)
    if target.kind == "llvm":
        # MetaSchedule needs the physical core count to size its parallel loops
        cfg.setdefault("num-cores", psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    tgt = tvm.target.Target(cfg)
    cost_model = "xgb" if importlib.util.find_spec("xgboost") else "random"
    with tempfile.TemporaryDirectory() as tmp:
        wd = work_dir or tmp
        with tgt:
            mod = tvm.transform.Sequential([
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.pipeline.zero_pipeline(),
            ])(mod)
            ms.relax_integration.tune_relax(
                mod, params={}, target=tgt, work_dir=wd, max_trials_global=trials,
                num_trials_per_iter=min(64, trials),
                builder=ms.builder.LocalBuilder(timeout_sec=build_timeout_s),
                runner=ms.runner.LocalRunner(timeout_sec=run_timeout_s),
                cost_model=cost_model)
            mod = relax.transform.MetaScheduleApplyDatabase(wd)(mod)
        return tvm.compile(mod, target=tgt)


def tuning_records(work_dir: str) -> int:
    """How many measured candidates a MetaSchedule work directory holds."""
    path = os.path.join(work_dir, "database_tuning_record.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def compile_graph(graph: Graph, target: str | Mapping[str, Any] | TargetSpec = "host", *,
                  batch: int = 1, weights: Mapping[str, Any] | None = None, seed: int = 0,
                  tune_trials: int = 0, work_dir: str | None = None,
                  db: TuningDatabase | None = None, trials_per_workload: int = 0,
                  cost_model: str = "auto", remote: RemoteDevice | None = None) -> Compiled:
    """Lower ``graph`` to Relax and compile it for ``target``.

    ``db``: compile from that :class:`~nasir.backends.tvm.tuning_db.TuningDatabase` (of the
    same target): workloads it lacks are first tuned with ``trials_per_workload`` measured
    candidates each (0: they keep TVM's default schedule); ``Compiled.tuning`` says how many
    workloads were hits. ``trials_per_workload > 0`` without ``db`` uses the target's
    database in the default folder; ``remote`` (a
    :class:`~nasir.backends.tvm.rpc.RemoteDevice`): candidates are timed there, through TVM
    RPC (how a cross target is tuned). ``tune_trials > 0`` instead runs MetaSchedule with that
    global trial budget into a throw-away work directory (off by default).
    Errors of lowering or of TVM are raised as :class:`~nasir.errors.BackendError`; a bad
    target as :class:`~nasir.errors.TargetError`.
    """
    spec = resolve_target(target)
    mod = lower(graph, weights, batch=batch, seed=seed)
    shapes = [tuple(n.type.shape) for n in _typed_inputs(graph)]
    t0 = time.perf_counter()
    stats = None
    if db is None and trials_per_workload:
        from nasir.backends.tvm.tuning_db import TuningDatabase

        db = TuningDatabase(spec)
    if db is not None and db.spec.key() != spec.key():
        raise BackendError(f"tuning database {db.path} is for {db.spec}, not {spec}",
                           where=f"graph @{graph.name}",
                           hint="open the database of the target you compile for")
    try:
        if db is not None:
            import tvm

            from nasir.backends.tvm.tuning import build_module, ms_prepare, tune_module

            pmod = ms_prepare(mod, tvm.target.Target(db.target_json()))
            stats = tune_module(pmod, spec, db, trials_per_workload, cost_model=cost_model,
                                seed=seed, remote=remote)
            ex = build_module(pmod, db, stats.keys)
        elif tune_trials:
            ex = tune(mod, spec, tune_trials, work_dir)
        else:
            import tvm

            ex = tvm.compile(mod, target=spec.tvm())
    except NasirError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()
        raise BackendError(f"TVM failed to compile for {spec}: "
                           f"{first[-1] if first else type(e).__name__}",
                           where=f"graph @{graph.name}") from e
    return Compiled(ex, spec, batch, shapes, time.perf_counter() - t0,
                    bool(tune_trials) or bool(stats and stats.hits + stats.tuned), stats)


def _typed_inputs(graph: Graph) -> list[Any]:
    if any(n.type is None for n in graph.inputs):
        from nasir.passes import verify

        graph = graph.copy()
        verify(graph)
    return graph.inputs

