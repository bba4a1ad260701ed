"""MetaSchedule's builder and runners, in process (what :mod:`nasir.backends.tvm.tuning` uses).

MetaSchedule's own ``LocalBuilder`` / ``LocalRunner`` / ``RPCRunner`` start worker processes
that import TVM — about 10 s each on a loaded 2-core machine, and its builder restarts its
pool for every batch of candidates; these call the same ``default_build`` /
``default_export`` and ``default_alloc_argument`` / ``default_run_evaluator`` (for
:func:`rpc_runner`: ``rpc_runner``'s upload, allocation and evaluator on an RPC session) in
the calling process.

>>> callable(in_process_builder().build)
True
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["in_process_builder", "in_process_runner", "rpc_runner"]


def in_process_builder() -> Any:
    """A MetaSchedule builder that builds and exports candidates in this process."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Builds candidates in this process (no worker start-up)."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            out = []
            for bi in build_inputs:
                try:
                    out.append(BuilderResult(default_export(default_build(bi.mod, bi.target,
                                                                          None)), None))
                except Exception as e:  # a candidate that fails to build is scored as such
                    out.append(BuilderResult(None, f"build failed: {e}"))
            return out

    return InProcessBuilder()


def in_process_runner(number: int, min_repeat_ms: int, window: Any = None) -> Any:
    """A MetaSchedule runner that times candidates in this process (``number`` runs of at
    least ``min_repeat_ms``), each batch inside ``window()`` when given (a context-manager
    factory, e.g. a quiet window keeping training off the cores)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import (
        LocalRunnerFuture,
        default_alloc_argument,
        default_run_evaluator,
    )

    cfg = EvaluatorConfig(number=number, repeat=1, min_repeat_ms=min_repeat_ms)

    def one(ri: Any) -> Any:
        try:
            rt = tvm.runtime.load_module(str(ri.artifact_path))
            dev = tvm.runtime.device(str(ri.device_type), 0)
            args = default_alloc_argument(dev, tuple(a.as_json() for a in ri.args_info), 1)
            return LocalRunnerFuture(default_run_evaluator(rt, dev, cfg, args))
        except Exception as e:
            return LocalRunnerFuture(None, f"run failed: {e}")

    @derived_object
    class InProcessRunner(PyRunner):
        """Times built candidates in this process (inside ``window()`` when given)."""

        def run(self, runner_inputs: list[Any]) -> list[Any]:
            with window() if window is not None else contextlib.nullcontext():
                return [one(ri) for ri in runner_inputs]

    return InProcessRunner()


def rpc_runner(connect: Callable[[], Any], number: int, min_repeat_ms: int,
               errors: list[str] | None = None) -> Any:
    """A MetaSchedule runner that times candidates on a remote device through TVM RPC:
    one session (``connect()``, e.g. :meth:`~nasir.backends.tvm.rpc.RemoteDevice.connect`)
    per batch of candidates, each candidate's artifact uploaded, timed there (``number``
    runs of at least ``min_repeat_ms``) and removed. A failed run scores its candidate as
    failed, as MetaSchedule's ``RPCRunner`` does; a failed connection scores the batch so
    and is appended to ``errors`` (the device was not reached: the caller keeps no record).
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
    from tvm.s_tir.meta_schedule.runner.rpc_runner import (
        default_alloc_argument,
        default_run_evaluator,
        default_upload_module,
    )

    cfg = EvaluatorConfig(number=number, repeat=1, min_repeat_ms=min_repeat_ms)

    def one(sess: Any, ri: Any) -> Any:
        remote = f"nasir-ms-{uuid.uuid4().hex}{os.path.splitext(str(ri.artifact_path))[1]}"
        try:
            rt = default_upload_module(sess, str(ri.artifact_path), remote)
            dev = sess.device(str(ri.device_type), 0)
            args = default_alloc_argument(sess, dev, tuple(a.as_json() for a in ri.args_info),
                                          1)
            return LocalRunnerFuture(default_run_evaluator(sess, rt, dev, cfg, args))
        except Exception as e:
            return LocalRunnerFuture(None, f"rpc run failed: {e}")
        finally:
            for path in (remote, remote + ".so"):
                with contextlib.suppress(Exception):  # not there: nothing to clean
                    sess.remove(path)

    @derived_object
    class RemoteRunner(PyRunner):
        """Times built candidates on the remote device of ``connect()``."""

        def run(self, runner_inputs: list[Any]) -> list[Any]:
            try:
                sess = connect()
            except Exception as e:
                if errors is not None:
                    errors.append(f"{type(e).__name__}: {e}".strip())
                return [LocalRunnerFuture(None, f"rpc connect failed: {e}")
                        for _ in runner_inputs]
            return [one(sess, ri) for ri in runner_inputs]

    return RemoteRunner()
