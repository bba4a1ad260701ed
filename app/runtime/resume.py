"""Continue a run after a crash (``kill -9`` included), an interrupt or a finished budget.

Nothing is guessed: the experiment comes from the store, the strategy is rebuilt by
replaying its stored events, trials that were in flight are run again and finished ones are
neither lost nor repeated (see :mod:`nasir.runtime.driver`).

>>> import tempfile
>>> from nasir.runtime.driver import run_search
>>> from nasir.runtime.experiment import Experiment
>>> exp = Experiment.from_dict({"space": {"name": "nb201"}, "estimator": {"kind": "nb201"},
...     "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
...     "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
...     "budget": {"trials": 3}})
>>> d = tempfile.mkdtemp()
>>> _ = run_search(exp, d)
>>> resume_run(d, trials=5)["counts"]["done"]
5
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nasir.errors import StoreError
from nasir.runtime.driver import Callback, Driver
from nasir.runtime.experiment import Experiment
from nasir.runtime.store import DB_NAME, RunStore

__all__ = ["find_run", "resume_run", "runs_root"]


def runs_root(root: str | None = None) -> str:
    """Where runs live: ``root``, ``$NASIR_RUNS_DIR`` or ``./runs``."""
    return root or os.environ.get("NASIR_RUNS_DIR") or "runs"


def _list(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    out = [os.path.join(root, d) for d in os.listdir(root)
           if os.path.exists(os.path.join(root, d, DB_NAME))]
    return sorted(out, key=lambda p: os.path.getmtime(os.path.join(p, DB_NAME)))


def find_run(name: str, root: str | None = None) -> str:
    """Resolve a run: a folder path, a folder name under the runs root, or ``latest``."""
    base = runs_root(root)
    if name in ("latest", "last"):
        runs = _list(base)
        if not runs:
            raise StoreError(f"no runs under {base}", where=base,
                             hint="start one with `nasir search`")
        return runs[-1]
    for cand in (name, os.path.join(base, name)):
        if os.path.exists(os.path.join(cand, DB_NAME)):
            return cand
        if os.path.isfile(cand) and cand.endswith(DB_NAME):
            return os.path.dirname(cand) or "."
    names = [os.path.basename(p) for p in _list(base)][-5:]
    raise StoreError(f"no run {name!r}", where=f"{name} (also looked in {base}/)",
                     hint=("recent runs: " + ", ".join(names)) if names
                     else "list runs with `nasir runs`")


def resume_run(folder: str, *, trials: int | None = None, wall_time_s: float | None = None,
               executor_overrides: Mapping[str, Any] | None = None,
               callback: Callback | None = None,
               notes: list[str] | None = None) -> dict[str, Any]:
    """Continue the run in ``folder``; ``trials`` / ``wall_time_s`` extend its budget and
    ``executor_overrides`` (``{"kind": "ray", "address": …}``) change where trials run.
    ``notes`` collects what the user should hear (e.g. the space file changed since the
    run began and the run's stored copy is used)."""
    store = RunStore.open(folder)
    try:
        exp = Experiment.from_dict(store.config, os.path.join(folder, DB_NAME))
        over: dict[str, Any] = {}
        if trials is not None:
            over["budget.trials"] = trials
        if wall_time_s is not None:
            over["budget.wall_time_s"] = wall_time_s
        for k, v in (executor_overrides or {}).items():
            over[f"executor.{k}"] = v
        if over:
            exp = exp.merged(over)
            store.set_meta("config", exp.to_dict())
        driver = Driver(store, exp, callback=callback)
        if notes is not None:
            notes.extend(driver.notes)
        if driver.notes and callback is not None:
            for note in driver.notes:
                callback("note", {"text": note})
        return driver.run()
    finally:
        store.close()
