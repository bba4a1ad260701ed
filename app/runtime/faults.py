"""A fault-injecting estimator, to prove that a run survives failing trials (``--estimator fault``).

It scores NB201 architectures from the NAS-Bench-201 table, but a share of architectures
(chosen by their canonical hash, so the same architecture always gets the same fault, on
any worker and after a resume) fails through a *real* failure path:

========== ===================================================================================
``raise``  a plain ``RuntimeError`` from the estimator
``nan``    accuracy ``nan`` (what a diverged training gives)
``memory`` the torch backend's training-memory prediction over ``memory_budget_bytes``
           (:func:`nasir.backends.torch.memory.check_memory` raises ``ResourceError``)
``sleep``  sleeps ``sleep_s`` — past the executor's ``trial_timeout_s``
``compile`` TVM compiles the network for an LLVM triple it cannot generate code for
           (``amdgcn-amd-amdhsa``: LLVM's verifier rejects the module)
``rpc``    TVM RPC measurement on a device that is gone (a closed loopback port)
``kill``   the worker process kills itself with ``SIGKILL`` mid-trial (pool / Ray only)
========== ===================================================================================

``faults`` maps a fault to the share of architectures that get it. The estimators a fault
estimator uses are handed to it — the one it wraps (``inner``, whose scores the unfaulted
architectures get) and the latency estimator class the ``compile`` and ``rpc`` faults run —
so this module imports none of :mod:`nasir.runtime.estimators`; that module's
:func:`~nasir.runtime.estimators.fault_estimator` builds one for ``--estimator fault``.

>>> from nasir.runtime.estimators import NB201TableEstimator
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> est = FaultEstimator({"raise": 1.0}, inner=NB201TableEstimator())
>>> try:
...     est.evaluate(sp, sp.reference("resnet"), seed=0)
... except RuntimeError as e:
...     print(e)
injected fault: the estimator raised
>>> est = FaultEstimator({"nan": 0.0}, inner=NB201TableEstimator())
>>> round(est.evaluate(sp, sp.reference("resnet"), seed=0)["accuracy"], 4)
0.8632
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasir.errors import NasirError
from nasir.space import Space

if TYPE_CHECKING:
    from nasir.runtime.estimators import Estimator

__all__ = ["FAULTS", "FaultEstimator"]

FAULTS = ("raise", "nan", "memory", "sleep", "compile", "rpc", "kill")


class FaultEstimator:
    """Scores by ``inner`` (the NB201 table for ``--estimator fault``), but injects the faults
    in ``faults`` (fault → share). ``latency`` builds a latency estimator from a target and
    its options (:class:`~nasir.runtime.estimators.LatencyEstimator`); only the ``compile``
    and ``rpc`` faults need it."""

    name = "fault"

    def __init__(self, faults: Mapping[str, float] | None = None, *, inner: Estimator,
                 latency: Callable[..., Estimator] | None = None, sleep_s: float = 30.0,
                 memory_budget_bytes: int = 1024) -> None:
        faults = dict(faults or {})
        bad = sorted(set(faults) - set(FAULTS))
        if bad:
            raise NasirError(f"unknown fault {bad[0]!r}", where="estimator.options.faults",
                             hint=f"valid faults: {', '.join(FAULTS)}")
        shares = [faults[k] for k in faults]
        if any(not isinstance(v, int | float) or not 0 <= v <= 1 for v in shares) \
                or sum(shares) > 1 + 1e-9:
            raise NasirError("fault shares must be numbers in [0, 1] adding up to at most 1",
                             where="estimator.options.faults")
        self.faults = {k: float(faults[k]) for k in FAULTS if k in faults}
        self.sleep_s = float(sleep_s)
        self.memory_budget_bytes = int(memory_budget_bytes)
        if latency is None and ("compile" in self.faults or "rpc" in self.faults):
            raise NasirError("the compile and rpc faults need a latency estimator",
                             where="estimator.options.faults",
                             hint="build it with nasir.runtime.estimators.fault_estimator")
        self.inner = inner
        self.latency = latency
        # load the tools a fault needs now, at worker start-up, not inside a timed trial
        if "memory" in self.faults:
            import nasir.backends.torch.memory
        if "compile" in self.faults or "rpc" in self.faults:
            import tvm  # noqa: F401

            import nasir.backends.tvm  # noqa: F401

    def fault_of(self, space: Space, assignment: Mapping[str, Any]) -> str | None:
        """The fault this architecture gets (``None``: it is scored normally)."""
        from nasir.passes.hashing import assignment_hash

        u = int(assignment_hash(space, assignment)[:8], 16) / 2**32
        acc = 0.0
        for fault, share in self.faults.items():
            acc += share
            if u < acc:
                return fault
        return None

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """The table's accuracy, or this architecture's fault."""
        fault = self.fault_of(space, assignment)
        if fault == "raise":
            raise RuntimeError("injected fault: the estimator raised")
        if fault == "nan":
            return {"accuracy": math.nan}
        if fault == "memory":
            from nasir.backends.torch.memory import check_memory, predict_training_memory

            g = space.instantiate(assignment)
            check_memory(predict_training_memory(g, 32, "adam"), self.memory_budget_bytes)
        elif fault == "sleep":
            time.sleep(self.sleep_s)
        elif fault in ("compile", "rpc") and self.latency is not None:
            if fault == "compile":
                est = self.latency({"kind": "llvm", "mtriple": "amdgcn-amd-amdhsa"}, repeats=1)
            else:
                est = self.latency("host", repeats=1, rpc=("127.0.0.1", _closed_port(), None))
            est.evaluate(space, assignment, seed=seed)
        elif fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.evaluate(space, assignment, seed=seed)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
