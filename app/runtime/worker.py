"""What a worker does with one trial: build (once) the space and estimator, evaluate, report.

The function never raises for a failing trial: an exception, a non-finite metric or a
NaN loss becomes ``{"status": "failed", "error": reason}``; a candidate that cannot fit the
device (:class:`~nasir.errors.InfeasibleTrial`) becomes ``{"status": "infeasible"}``. Workers
never touch the run store; they return plain dicts to the driver.

>>> exp = {"space": {"name": "nb201"}, "estimator": {"kind": "nb201"}}
>>> from nasir.spaces import get_space
>>> a = get_space("nb201").reference("resnet").to_json()
>>> r = run_trial(exp, None, {"trial": 1, "assignment": a, "seed": 0, "attempt": 1})
>>> r["status"], round(r["metrics"]["accuracy"], 4)
('done', 0.8632)
>>> r = run_trial(exp, None, {"trial": 2, "assignment": dict(a, edge_0_1="conv9"), "seed": 0})
>>> r["status"], r["error"].split(":")[0]
('failed', 'AssignmentError')
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from collections.abc import Mapping
from typing import Any

from nasir.errors import InfeasibleTrial, NasirError, located
from nasir.runtime.gpus import VISIBLE_ENV, WORKER_DEVICE_ENV

__all__ = ["build_context", "build_space", "run_trial", "trial_seed", "worker_name"]

_CONTEXTS: dict[str, tuple[Any, Any]] = {}


def worker_name(kind: str = "local") -> str:
    """``host:kind:pid`` — recorded with each trial; ``host:kind:pid:gpuI`` when the worker
    trains on CUDA with GPU ``I`` (its ``CUDA_VISIBLE_DEVICES``) as its own
    (:mod:`nasir.runtime.gpus`)."""
    name = f"{socket.gethostname()}:{kind}:{os.getpid()}"
    gpu = os.environ.get(VISIBLE_ENV)
    if gpu and os.environ.get(WORKER_DEVICE_ENV, "").startswith("cuda"):
        name += f":gpu{gpu}"
    return name


def trial_seed(run_seed: int, arch_hash: str) -> int:
    """The training seed of an architecture: from the run seed and its canonical hash, so
    the same architecture gets the same seed whenever (and wherever) it is evaluated.

    >>> trial_seed(0, "ab12") == trial_seed(0, "ab12") != trial_seed(1, "ab12")
    True
    """
    return (int(run_seed) * 1_000_003 + int(arch_hash[:12], 16)) % (2**31 - 1)


def build_space(exp: Mapping[str, Any], run_dir: str | None = None,
                notes: list[str] | None = None):
    """The space an experiment dict names — for a run folder, the space that run keeps
    (:func:`~nasir.runtime.run_space.load_run_space`)."""
    from nasir.runtime.run_space import load_run_space

    try:
        return load_run_space(exp, run_dir, notes)
    except NasirError as e:
        raise located(e, "experiment option space.name / space.options") from None


def build_context(exp: Mapping[str, Any], run_dir: str | None) -> tuple[Any, Any]:
    """The space and the estimator of an experiment dict (what each worker builds once);
    a bad option is a :class:`NasirError` naming the experiment key."""
    from nasir.runtime.estimators import build_estimator

    space = build_space(exp, run_dir)
    try:
        return space, build_estimator(exp, run_dir)
    except NasirError as e:
        raise located(e, "experiment option estimator.*") from None


def _context(exp: Mapping[str, Any], run_dir: str | None) -> tuple[Any, Any]:
    key = json.dumps([exp, run_dir], sort_keys=True)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = build_context(exp, run_dir)
        _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return ctx


def _reason(e: BaseException) -> str:
    if isinstance(e, NasirError):
        return f"{type(e).__name__}: {e}"
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[-1] if msg else ''}{where}"


def run_trial(exp: Mapping[str, Any], run_dir: str | None, task: Mapping[str, Any],
              kind: str = "local") -> dict[str, Any]:
    """Evaluate one trial; returns ``trial, status, metrics, error, worker, eval_s``."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"trial": task["trial"], "worker": worker_name(kind),
                           "attempt": int(task.get("attempt", 1))}
    try:
        space, est = _context(exp, run_dir)
        if hasattr(est, "set_task"):
            est.set_task(task)
        a = space.check(task["assignment"])
        metrics = est.evaluate(space, a, seed=int(task.get("seed", 0)))
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise NasirError(f"metric {bad[0]} is {metrics[bad[0]]}", hint="training diverged")
        out.update(status="done", metrics=dict(metrics), error=None)
    except InfeasibleTrial as e:  # cannot fit the device: recorded as such, not failed
        out.update(status="infeasible", metrics={}, error=_reason(e))
    except Exception as e:
        out.update(status="failed", metrics={}, error=_reason(e))
    out["eval_s"] = time.perf_counter() - t0
    return out
