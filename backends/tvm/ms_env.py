"""Making MetaSchedule usable in this process: a probe that its IR serialisation works
(:func:`check_serialization`), the ``tensor_intrin`` import every tuning context does, made
cheap (:func:`import_tensor_intrin`), and its loggers kept quiet while tuning
(:func:`quiet_ms_logs`). Used by :mod:`.tuning` and :func:`.compile.tune`.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import logging
import subprocess
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from nasir.errors import BackendError

__all__ = ["check_serialization", "import_tensor_intrin", "quiet_ms_logs"]


@lru_cache(maxsize=1)
def check_serialization() -> None:
    """Raise :class:`~nasir.errors.BackendError` when MetaSchedule cannot work here: it
    serialises IR to JSON, and some apache-tvm-ffi builds crash the process there (0.1.15
    with apache-tvm 0.27), so this probes it once per process in a child process."""
    probe = "import tvm; tvm.ir.save_json(tvm.tirx.IntImm('int32', 1))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120,
                       check=False)
    if r.returncode != 0:
        import tvm_ffi

        raise BackendError(
            "MetaSchedule is unusable here: TVM's IR serialisation crashes "
            f"(apache-tvm-ffi {getattr(tvm_ffi, '__version__', '?')})",
            hint="install an apache-tvm-ffi that matches apache-tvm (0.1.14.post1 works with "
                 "0.27), or measure untuned (tune_trials=0)")


def _light_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()`` without ``inspect.getmodule``: one line of context per frame."""
    out = []
    f: Any = sys._getframe(1)
    while f is not None:
        fn, ln = f.f_code.co_filename, f.f_lineno
        line = linecache.getline(fn, ln)
        out.append(inspect.FrameInfo(f, fn, ln, f.f_code.co_name, [line] if line else None,
                                     0 if line else None))
        f = f.f_back
    return out


@lru_cache(maxsize=1)
def import_tensor_intrin() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (every MetaSchedule tuning context does) with
    a light ``inspect.stack``: its 248 TVMScript functions each call ``inspect.stack()``,
    whose ``getmodule`` scans ``sys.modules`` for every import frame — 4 minutes in a
    process that has imported torch on a loaded 2-core machine, about a second this way."""
    saved = inspect.stack
    inspect.stack = _light_stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = saved


def _ms_loggers() -> list[logging.Logger]:
    return [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
            if n.startswith("tvm.s_tir.meta_schedule")]


@contextlib.contextmanager
def quiet_ms_logs() -> Iterator[None]:
    """MetaSchedule's console handler takes its logger's level (INFO tables on stdout for
    every round) and each tuning adds handlers: tune at WARNING, then close and drop the
    handlers the tuning added and restore the levels. Unnamed handlers on its logger (e.g.
    pytest's capture handlers) are detached meanwhile: MetaSchedule re-attaches its logger's
    handlers by name and fails on a handler without one."""
    root = logging.getLogger("tvm.s_tir.meta_schedule")
    level = root.level
    unnamed = [h for h in root.handlers if h.get_name() is None]
    for h in unnamed:
        root.removeHandler(h)
    before = {id(h) for lg in _ms_loggers() for h in lg.handlers}
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg in _ms_loggers():
            for h in list(lg.handlers):
                if id(h) not in before:
                    lg.removeHandler(h)
                    h.close()
        root.setLevel(level)
        for h in unnamed:
            root.addHandler(h)
