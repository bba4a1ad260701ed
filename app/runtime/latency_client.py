"""The driver's pipe to the measurement process of ``latency.policy`` predict / auto.

:class:`ServiceClient` starts the process
(:func:`~nasir.runtime.latency_service.service_main`) on the first request, sends requests
``(kind, trial, assignment)`` with the training pids of the moment, and returns the answers
in the order they were asked. A process that dies gets the requests it held once more (in a
new process); if it dies again they come back as failed answers. What to ask, and when, is
the caller's (:class:`~nasir.runtime.latency_policy.LatencyRunner`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["ServiceClient"]

#: a request: (kind, trial id, assignment); kind is ``predict``, ``fill`` or ``measure``
Request = tuple[str, int, Any]
#: seconds :meth:`ServiceClient.close` waits for the process to end before killing it (one
#: background tuning step or network measurement under way; an idle process ends at once)
CLOSE_WAIT_S = 30.0


class ServiceClient:
    """One measurement process per run, started lazily; ``pids`` gives the training
    processes to keep off its cores (asked afresh with every request)."""

    def __init__(self, exp: dict[str, Any], folder: str | None,
                 pids: Callable[[], list[int]] = list) -> None:
        self.exp, self.folder, self.pids = exp, folder, pids
        self.inflight: deque[Request] = deque()  # sent, answers come back in this order
        self.deaths = 0
        self.proc: Any = None
        self.conn: Any = None
        self._ctx = mp.get_context("spawn")

    def _spawn(self) -> None:
        from nasir.runtime.latency_service import service_main

        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=service_main, name="nasir-latency",
                                      args=(child, self.exp, self.folder, os.getpid()),
                                      daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def send(self, req: Request) -> None:
        """Ask ``req`` (the process starts if none is alive)."""
        if self.proc is None or not self.proc.is_alive():
            self._spawn()
        self.inflight.append(req)
        self.conn.send((req[0], req[1], req[2], list(self.pids())))

    def recv(self, timeout: float) -> list[dict[str, Any]] | None:
        """The next answer(s) within ``timeout`` s: one answer; the failed answers of a
        process that died twice; ``[]`` when a dead process's requests were asked again;
        ``None`` when nothing came (or nothing is asked)."""
        if not self.inflight:
            return None
        msg = None
        try:
            if self.conn.poll(max(0.0, timeout)):
                msg = self.conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is not None:
            self.inflight.popleft()
            self.deaths = 0
            return [msg]
        if self.proc.is_alive():
            return None
        self.conn.close()  # the process died: its requests once more, then they fail
        self.proc = self.conn = None
        self.deaths += 1
        lost = list(self.inflight)
        self.inflight.clear()
        if self.deaths <= 1:
            for req in lost:
                self.send(req)
            return []
        self.deaths = 0
        return [{"kind": kind, "trial": tid, "ok": False,
                 "reason": "the latency process died twice"} for kind, tid, _ in lost]

    def close(self) -> dict[str, Any] | None:
        """Stop the process: asked to end, killed if it has not after ``CLOSE_WAIT_S`` (it
        ends at once when idle; a tuning step or a measurement under way finishes first, so
        that the tuning still queued is saved to the database's wanted list). Returns the
        process's last word, ``{"kind": "closed", "tuning_...": ...}`` (its tuning counts
        after that save), or ``None`` when it sent none (no tuner, killed, or never
        started); answers to requests still in flight are dropped."""
        final: dict[str, Any] | None = None
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            end = time.monotonic() + CLOSE_WAIT_S
            with contextlib.suppress(OSError, EOFError):  # EOF: it ended without a word
                self.conn.send(None)
                while final is None and self.conn.poll(max(0.0, end - time.monotonic())):
                    msg = self.conn.recv()
                    if isinstance(msg, dict) and msg.get("kind") == "closed":
                        final = msg
            self.proc.join(max(0.0, end - time.monotonic()))
        self.inflight.clear()
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None
        return final
