"""``nasir.optimize``: search a space with your own objective, from Python.

In the spirit of Optuna's ``study.optimize(objective)``, but every trial goes through
nasir's runner, so the run has everything ``nasir search`` gives: the SQLite store, resume
after ``kill -9`` (call ``optimize`` again with the same ``run``, or ``nasir resume RUN``),
worker processes, ``nasir report`` and ``nasir export``.

The objective must be importable by a fresh process: a module-level function of a module,
or of the script you run (then put the ``optimize`` call under
``if __name__ == "__main__":`` — nasir imports your script to find the objective again).

>>> import tempfile
>>> from nasir.runtime.optimize import optimize
>>> r = optimize("nb201", "nasir.runtime.optimize:_example_objective", trials=4,
...              objectives="params:min", run=tempfile.mkdtemp() + "/run", progress=False)
>>> r.counts["done"], r.best["metrics"]["params"] <= max(t["metrics"]["params"]
...                                                       for t in r.trials())
(4, True)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasir.errors import NasirError
from nasir.space import Space

__all__ = ["RunResult", "optimize"]


@dataclass
class RunResult:
    """What :func:`optimize` returns: the run folder, its summary and its trials."""

    run_dir: str
    summary: dict[str, Any]

    @property
    def best(self) -> dict[str, Any] | None:
        """The finished trial with the highest reward (the first objective, signed)."""
        return self.summary.get("best")

    @property
    def counts(self) -> dict[str, int]:
        """Trials by status."""
        return dict(self.summary.get("counts") or {})

    def trials(self) -> list[dict[str, Any]]:
        """Every trial of the run, in order."""
        from nasir.runtime.store import RunStore

        st = RunStore.open(self.run_dir)
        try:
            return st.trials()
        finally:
            st.close()


def _example_objective(trial: Any) -> dict[str, Any]:
    """The objective of this module's doctest: the parameter count of the candidate."""
    from nasir.passes.analysis import analyze

    return {"params": float(analyze(trial.graph)["params"])}


def _callable_spec(fn: Callable[..., Any], what: str) -> str:
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or "<" in qual:
        raise NasirError(f"the {what} {qual or fn!r} cannot be found again by a fresh process",
                         hint="define it at the top level of a module or of your script "
                              "(no lambda, no nested function)")
    if mod == "__main__":
        path = getattr(sys.modules["__main__"], "__file__", None)
        if not path:
            raise NasirError(f"the {what} {qual} lives in an interactive session",
                             hint="put it in a .py file (module-level) and pass that")
        return f"{os.path.abspath(path)}:{qual}"
    if mod.startswith("_nasir_user_"):  # a user file nasir imported: name the file
        return f"{os.path.abspath(sys.modules[mod].__file__ or '')}:{qual}"
    return f"{mod}:{qual}"


def _objectives(spec: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    if spec is None:
        return {"accuracy": "max"}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    items = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, str] = {}
    for item in items:
        key, _, sense = str(item).partition(":")
        out[key] = sense or "max"
    return out


def _space_spec(space: Any) -> str:
    if isinstance(space, str):
        return space
    if isinstance(space, Space):
        import hashlib

        from nasir.runtime.run_space import space_fingerprint
        from nasir.spaces import register_space

        digest = hashlib.sha256(space_fingerprint(space).encode()).hexdigest()[:12]
        name = f"optimize-{space.name}-{digest}"
        with contextlib.suppress(NasirError):  # registered already: the same space
            register_space(name, lambda: space)
        return name
    if callable(space):
        return _callable_spec(space, "space function")
    raise NasirError(f"cannot search {type(space).__name__}",
                     hint="pass a space spec (a name, file.py:function), a space function "
                          "or a Space")


def optimize(space: str | Space | Callable[..., Space], objective: str | Callable[..., Any],
             *, trials: int = 20, strategy: str = "evolution",
             strategy_options: Mapping[str, Any] | None = None,
             objectives: str | Sequence[str] | Mapping[str, str] | None = None,
             run: str | None = None, data: str | None = None,
             data_options: Mapping[str, Any] | None = None,
             space_options: Mapping[str, Any] | None = None,
             evaluator_options: Mapping[str, Any] | None = None, prune: str = "median",
             constraints: Mapping[str, float] | None = None, seed: int = 0,
             workers: int = 1, executor: str | None = None,
             wall_time_s: float | None = None, latency: str = "auto",
             progress: bool = True) -> RunResult:
    """Search ``space`` for the best ``objective`` (see the module docstring).

    ``objectives``: ``"accuracy:max"``, ``["latency_ms:min", "accuracy:max"]`` or a dict; the
    first is what the strategy optimises, all of them make the Pareto front. ``run``: the run
    folder — if it holds a run already, that run is resumed (with ``trials`` as its new
    budget). ``data``: a data set for ``trial.data`` (and to build the space for).
    """
    from nasir.runtime.driver import default_run_dir, run_search
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.store import DB_NAME
    from nasir.userload import importing

    if importing():
        raise NasirError(f"nasir.optimize was called while nasir imported {importing()} to "
                         "find your objective or space", where=importing(),
                         hint='put the call under `if __name__ == "__main__":`')
    if run is not None and os.path.exists(os.path.join(run, DB_NAME)):
        from nasir.runtime.resume import resume_run

        return RunResult(run, resume_run(run, trials=trials, callback=_callback(progress)))
    fn_spec = objective if isinstance(objective, str) else _callable_spec(objective,
                                                                          "objective")
    exp = Experiment.from_dict({
        "space": {"name": _space_spec(space), "options": dict(space_options or {})},
        "data": {"name": data, "options": dict(data_options or {})},
        "strategy": {"name": strategy, "options": dict(strategy_options or {})},
        "evaluator": {"function": fn_spec, "options": dict(evaluator_options or {}),
                      "prune": prune},
        "estimator": {"latency": latency},
        "objectives": _objectives(objectives),
        "constraints": dict(constraints or {}),
        "budget": {"trials": trials, "wall_time_s": wall_time_s},
        "executor": {"kind": executor or ("inprocess" if workers == 1 else "pool"),
                     "workers": workers},
        "seed": seed,
    }, "nasir.optimize")
    run_dir = run or default_run_dir(exp)
    return RunResult(run_dir, run_search(exp, run_dir, callback=_callback(progress)))


def _callback(progress: bool) -> Any:
    if not progress:
        return None
    from rich.console import Console

    from nasir.runtime.console import ProgressCallback

    return ProgressCallback(Console(stderr=True), "optimize")
