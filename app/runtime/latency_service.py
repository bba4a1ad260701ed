"""The measurement process of ``latency.policy`` predict / auto.

One process per run (:class:`~nasir.runtime.latency_policy.LatencyRunner` starts it) answers
requests one at a time: ``predict`` (a network's per-layer table latency; layers the table
lacks are compiled and timed once, :class:`~nasir.runtime.latency_table.PolicyLUT`),
``fill`` (the same, for a trial that was answered with an estimate and goes on without it)
and ``measure`` (the whole network compiled and timed,
:func:`~nasir.runtime.latency_measure.measure_network`, through the run's latency cache).
With ``latency.tuned`` and ``latency.tune_trials`` > 0, the workloads a measured network
found missing from the tuning database are tuned while no request waits, one at a time
(:mod:`nasir.runtime.background_tuning`); every answer carries the tuning counts so far.

It is pinned to the last ``latency.cores`` CPUs. While it *times* something (compilation
runs outside this window), every thread of the training processes is moved off those CPUs
(:func:`~nasir.runtime.latency_measure.quiet_window`) and moved back after, so a timed run
never shares a core with training. Limits: other programs on the machine are not moved; on
a one-CPU machine there is nowhere to move them; Ray workers are not moved (their pids are
not known here); on a 2-core machine training runs on one core during each window.

The table and measurement helpers it uses are re-exported here for older imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from nasir.runtime.latency_measure import measure_network as measure_network
from nasir.runtime.latency_measure import measurement_cores
from nasir.runtime.latency_measure import quiet_window as quiet_window
from nasir.runtime.latency_measure import tuned_compile_options as tuned_compile_options
from nasir.runtime.latency_table import PolicyLUT as PolicyLUT
from nasir.runtime.latency_table import measure_setup
from nasir.runtime.latency_table import open_table as open_table

__all__ = ["PolicyLUT", "measure_network", "open_table", "quiet_window", "service_main",
           "tuned_compile_options"]


def service_main(conn: Any, exp: dict[str, Any], run_dir: str | None, parent: int) -> None:
    """The dedicated measurement process: table latency and whole-network measurements."""
    from nasir.runtime.executors import _die_with_parent

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nasir.runtime.experiment import Experiment

    e = Experiment.from_dict(exp)
    cores = measurement_cores(e.latency.cores)
    os.environ["TVM_NUM_THREADS"] = str(len(cores))
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, cores)
    from nasir.backends.tvm import LatencyCache
    from nasir.runtime.worker import build_space

    target, cfg = measure_setup(e)
    pids: list[int] = []
    build = tuned_compile_options(target) if e.latency.tuned else {}

    space = build_space(exp, run_dir)
    lut = open_table(e, space)
    lut.build, lut.pids, lut.cores = build, pids, cores
    cache: Any = None  # the run's latency cache, opened by the first measurement
    tuner = None
    if build:  # with tune_trials 0 it queues nothing and only reports zeros
        from nasir.runtime.background_tuning import BackgroundTuner

        tuner = BackgroundTuner(build["db"], e.latency.tune_trials, batch=cfg.batch,
                                window=lambda: quiet_window(pids, cores))
        lut.tuner = tuner  # table layers offer their workloads too, as whole networks do
    while True:
        try:
            if tuner is not None and tuner.pending and not conn.poll(0):
                _tune_step(tuner)  # idle: one workload (or one network's extraction)
                continue
            msg = conn.recv()
        except (EOFError, OSError):  # the driver is gone: keep what is queued all the same
            msg = None
        if msg is None:  # the run ends: work still queued waits in the database's wanted list
            if tuner is not None:
                tuner.persist()
                with contextlib.suppress(BrokenPipeError, OSError):  # the final counts
                    conn.send({"kind": "closed", **tuner.summary()})
            return
        kind, tid, assignment, pids[:] = msg
        t0 = time.perf_counter()
        out: dict[str, Any] = {"kind": kind, "trial": tid}
        try:
            g = space.instantiate(space.check(assignment))
            if kind in ("predict", "fill"):
                before = lut.measured_now
                out.update(ok=True, table_ms=lut.layer_sum(g) + lut.constant_ms,
                           new_layers=lut.measured_now - before)
            else:
                if cache is None and run_dir:
                    cache = LatencyCache(os.path.join(run_dir, "latency.sqlite"))
                out.update(measure_network(g, target, cfg, cache, pids, cores, build, tuner,
                                           e.latency_paths))
        except Exception as err:  # reported per request; the process goes on
            out.update(ok=False, reason=f"{type(err).__name__}: {str(err).splitlines()[0]}"
                       if str(err) else type(err).__name__)
        out["seconds"] = time.perf_counter() - t0
        out.update(tuner.summary() if tuner is not None else {})
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


def _tune_step(tuner: Any) -> None:
    try:
        tuner.step()
    except Exception as err:  # the database went bad: the run goes on untuned
        tuner.stop(err)
