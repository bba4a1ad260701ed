"""Run folders: the default one an experiment gets, a folder-safe label for a space, and
undoing a failed start (:mod:`~nasir.runtime.driver` re-exports them).
"""

from __future__ import annotations

import os
import re
import shutil
import time

from nasir.runtime.experiment import Experiment
from nasir.runtime.store import DB_NAME

__all__ = ["default_run_dir", "run_label"]


def _remove_run(run_dir: str, existed: bool) -> None:
    """Undo a failed start: the folder if this start made it, else what it wrote there."""
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    from nasir.runtime.run_space import SPACE_DIR

    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        p = os.path.join(run_dir, name)
        if os.path.exists(p):
            os.remove(p)
    shutil.rmtree(os.path.join(run_dir, SPACE_DIR), ignore_errors=True)


def run_label(spec: str) -> str:
    """A folder-safe short name for a space spec (``dir/mine.py:build`` → ``mine-build``).

    >>> run_label("/tmp/x/my space.py:build"), run_label("nb201")
    ('my_space-build', 'nb201')
    """
    target, sep, attr = spec.rpartition(":")
    if sep:
        stem = os.path.splitext(os.path.basename(target))[0] or target
        spec = f"{stem.rsplit('.', 1)[-1]}-{attr}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("._") or "space"


def default_run_dir(exp: Experiment, root: str | None = None) -> str:
    """``ROOT/YYYYmmdd-HHMMSS-SPACE-STRATEGY`` (``ROOT``: ``$NASIR_RUNS_DIR`` or ``runs``)."""
    root = root or os.environ.get("NASIR_RUNS_DIR") or "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = exp.name or f"{stamp}-{run_label(exp.space.name)}-{run_label(exp.strategy.name)}"
    base = os.path.join(root, name)
    path, k = base, 1
    while os.path.exists(os.path.join(path, "run.sqlite")):
        k += 1
        path = f"{base}-{k}"
    return path
