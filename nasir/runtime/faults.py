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

``faults`` maps a fault to the share of architectures that get it.

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201")
>>> est = FaultEstimator({"raise": 1.0})
>>> try:
...     est.evaluate(sp, sp.reference("resnet"), seed=0)
... except RuntimeError as e:
...     print(e)
injected fault: the estimator raised
>>> round(FaultEstimator({"nan": 0.0}).evaluate(sp, sp.reference("resnet"), seed=0)["accuracy"], 4)
0.8632
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

from nasir.errors import NasirError
from nasir.space import Space

__all__ = ["FAULTS", "FaultEstimator"]

FAULTS = ("raise", "nan", "memory", "sleep", "compile", "rpc", "kill")


class FaultEstimator:
    """NB201-table estimator that injects the faults in ``faults`` (fault → share)."""

    name = "fault"

    def __init__(self, faults: Mapping[str, float] | None = None, *, sleep_s: float = 30.0,
                 simulate_s: float = 0.0, memory_budget_bytes: int = 1024) -> None:
        from nasir.runtime.estimators import NB201TableEstimator

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
        self.table = NB201TableEstimator(simulate_s)
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
        elif fault in ("compile", "rpc"):
            from nasir.runtime.estimators import LatencyEstimator

            if fault == "compile":
                est = LatencyEstimator({"kind": "llvm", "mtriple": "amdgcn-amd-amdhsa"},
                                       repeats=1)
            else:
                est = LatencyEstimator("host", repeats=1, rpc=("127.0.0.1", _closed_port(),
                                                               None))
            est.evaluate(space, assignment, seed=seed)
        elif fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.table.evaluate(space, assignment, seed=seed)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
