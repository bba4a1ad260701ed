"""The executors' base class and the failed-trial result they share
(:mod:`~nasir.runtime.executors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Executor"]


class Executor:
    """Base: ``slots`` trials may run at once."""

    slots: int = 1

    def submit(self, task: Mapping[str, Any]) -> None:
        """Queue one trial."""
        raise NotImplementedError

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` seconds and return the results that finished."""
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Trials submitted and not yet returned."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop workers."""

    def pids(self) -> list[int]:
        """The processes trials run in here (none known: Ray)."""
        return []


def _failed(task: Mapping[str, Any], reason: str, worker: str | None,
            eval_s: float | None = None) -> dict[str, Any]:
    return {"trial": task["trial"], "status": "failed", "metrics": {}, "error": reason,
            "worker": worker, "attempt": int(task.get("attempt", 1)), "eval_s": eval_s}
