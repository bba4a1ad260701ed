"""Is this machine running at its full speed right now? A latency is timed only when it is.

On a shared or virtual machine a CPU's speed is not constant: on the 2-vCPU machines nasir is
built on, each vCPU runs at one of two speeds for seconds to a minute at a time (a fixed
convolution takes 0.066 ms or 0.117 ms, the slower 60–70 % of one minute measured), and everything
timed on that vCPU — TVM's library, ONNX Runtime, PyTorch — slows with it, by 1.4–1.8×
depending on the kernel. Two measurements of the same network then differ by far more than
repeating a measurement right away shows (``benchmarks/latency_retest.py``), and no latency
model or search can rank candidates better than their measurements repeat.

:class:`SpeedGate` times a fixed reference kernel (:data:`REFERENCE`, on the calling thread
with the measurement's thread count) and calls the machine *fast* when the kernel runs within
``tol`` of the fastest it has ever run here (kept per CPU model and thread count in a small
JSON file, so each process need not find the fast state again). :meth:`SpeedGate.timed`
waits (up to ``budget_s``) until the machine is fast — with one thread and more allowed
CPUs, on whichever CPU is fast — runs the timing there, checks the kernel again after, and
times again if the machine slowed meanwhile. The result says the speed it was timed at
(``speed`` = fastest reference / reference around the timing; 1.0 = full speed), so a
latency timed below full speed after the budget ran out is visible, not silent.

A machine's full speed is not forever either: the same 2-vCPU machine whose reference once ran
in 0.052 ms ran it in 0.066 ms at best hours later (and 0.09–0.11 ms in its slow phases), so
a gate keeping the old best waited out its whole budget before every timing. A stored
baseline that no probe has come within ``tol`` of for :data:`BASELINE_TTL_S` is *stale*: the
gate learns the machine's full speed again, probing for ``learn_s`` (:data:`LEARN_S`) before
it trusts the fastest it has seen (a gate with no baseline does the same).

Nor is one fast probe a full speed: a 2-vCPU machine's reference once ran in 0.052 ms for a
moment and at 1.34–1.67× that for the minutes after, so a baseline taken from the fastest
probe made every timing wait out its budget. The baseline is the :data:`CONFIRM`-th fastest
probe (a process with fewer probes: its slowest), so a speed counts once it was seen that
often — a passing spike or a short fast phase does not anchor the gate.

>>> gate = SpeedGate(threads=1, store=None)
>>> value, s = gate.timed(lambda: 42, budget_s=0.5)
>>> value, 0 < s.speed <= 1.0, s.ref_ms > 0
(42, True, True)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from nasir.backends.tvm.user_cache import cache_dir

__all__ = ["BASELINE_TTL_S", "CONFIRM", "LEARN_S", "REFERENCE", "TOL", "Settled", "SpeedGate",
           "at_full_speed", "at_speed", "default_store", "process_gate", "tvm_threads"]

T = TypeVar("T")

#: What the reference kernel is (part of the stored baseline's key: change it with the kernel).
REFERENCE = "torch conv2d 32x32 3x3 on 1x32x16x16 fp32 v1"
#: How much slower than its fastest the reference may run and the machine count as fast.
TOL = 0.25
#: A stored fastest reference not reached (within ``tol``) for this long is learnt again.
BASELINE_TTL_S = 1800.0
#: How long a gate without a (fresh) baseline probes before it trusts the fastest it saw.
LEARN_S = 5.0
#: How many probes must run at least this fast before a speed becomes the baseline.
CONFIRM = 5
_STAMP_S = 60.0  # how often reaching the baseline is written back (it keeps it fresh)
_BLOCKS = 7  # a probe: the median of this many blocks of >= _BLOCK_MS each
_BLOCK_MS = 1.0


def at_full_speed(speed: float, tol: float = TOL) -> bool:
    """Whether a timing's ``speed`` (:attr:`Settled.speed`) counts as full speed.

    >>> at_full_speed(0.95), at_full_speed(0.6)
    (True, False)
    """
    return speed * (1 + tol) >= 1 - 1e-9


def default_store() -> str:
    """``$NASIR_CACHE_DIR/machine_speed.json`` (default ``~/.cache/nasir``)."""
    return os.path.join(cache_dir(), "machine_speed.json")


@dataclass(frozen=True)
class Settled:
    """The machine's speed around one timing: the reference kernel's time before and after
    (``ref_ms``: the slower of the two), the fastest it has run (``baseline_ms``), how long
    the gate waited for full speed and on which CPU it timed (``None``: not pinned)."""

    ref_ms: float
    baseline_ms: float
    waited_s: float
    cpu: int | None
    attempts: int = 1

    @property
    def speed(self) -> float:
        """``baseline_ms / ref_ms``: 1.0 at full speed, 0.6 when the reference ran 1.67×
        slower than its best."""
        return min(1.0, self.baseline_ms / self.ref_ms)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"speed": round(self.speed, 4), "ref_ms": round(self.ref_ms, 6),
                "baseline_ms": round(self.baseline_ms, 6),
                "waited_s": round(self.waited_s, 3), "cpu": self.cpu,
                "attempts": self.attempts}


class SpeedGate:
    """Times work only when this machine runs at its full speed (module docstring).

    ``threads``: the thread count the measured work uses (the reference runs with as many);
    ``tol``: how much slower than its best the reference may run and the machine still count
    as fast; ``store``: the JSON file keeping the fastest reference time per CPU model and
    thread count (``None``: this process only), with when it was last reached; ``learn_s``:
    how long to probe before trusting a baseline learnt afresh."""

    def __init__(self, threads: int = 1, *, tol: float = TOL,
                 store: str | None = None, learn_s: float = LEARN_S) -> None:
        import torch

        self.threads, self.tol, self.store = int(threads), float(tol), store
        self.learn_s = float(learn_s)
        self.key = f"{platform.processor() or platform.machine()}|{_cpu_model()}|" \
                   f"threads={self.threads}|{REFERENCE}"
        gen = torch.Generator().manual_seed(0)
        self._w = torch.randn(32, 32, 3, 3, generator=gen)
        self._x = torch.randn(1, 32, 16, 16, generator=gen)
        self._number = 0
        self._fastest: list[float] = []  # this process's CONFIRM fastest probes, ascending
        self._own = False  # whether the baseline is learnt from this process's probes
        self._saved_ms: float | None = None  # what this gate last wrote to the store
        self.baseline_ms, self._reached = self._load()
        self._stamped = self._reached
        self._learn_end: float | None = None

    # -- the reference kernel ------------------------------------------------------------

    def probe(self) -> float:
        """The reference kernel's time now (ms per call, the median of a few short blocks)
        on the calling thread's CPUs; lowers the baseline when it is the fastest yet."""
        import numpy as np
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                f = torch.nn.functional.conv2d
                if not self._number:
                    for _ in range(20):
                        f(self._x, self._w, padding=1)
                    t0 = time.perf_counter()
                    f(self._x, self._w, padding=1)
                    once = max(time.perf_counter() - t0, 1e-7)
                    self._number = max(1, int(_BLOCK_MS / 1e3 / once))
                blocks = []
                for _ in range(_BLOCKS):
                    t0 = time.perf_counter()
                    for _ in range(self._number):
                        f(self._x, self._w, padding=1)
                    blocks.append((time.perf_counter() - t0) / self._number * 1e3)
        finally:
            torch.set_num_threads(saved)
        return self._record(float(np.median(blocks)))

    def _record(self, ms: float) -> float:
        """Keep a probe of ``ms``: the baseline is the :data:`CONFIRM`-th fastest probe of
        this process once that is faster than a baseline it did not learn itself (stored,
        or another process's); of a process that learnt its own, the slowest of its first
        few. Reaching the baseline (within ``tol``) is stamped."""
        now = time.time()
        if len(self._fastest) < CONFIRM or ms < self._fastest[-1]:
            self._fastest = sorted([*self._fastest, ms])[:CONFIRM]
        confirmed = self._fastest[-1]
        if self.baseline_ms is None or (self._own and confirmed != self.baseline_ms) or (
                len(self._fastest) == CONFIRM and confirmed < self.baseline_ms):
            self.baseline_ms, self._reached, self._own = confirmed, now, True
            self._save(confirmed)
        elif self.fast(ms):
            self._reached = now
            if now - self._stamped > _STAMP_S:
                self._save(self.baseline_ms)
        return ms

    def stale(self) -> bool:
        """Whether the baseline was not reached (within ``tol``) for :data:`BASELINE_TTL_S`."""
        return self.baseline_ms is not None and time.time() - self._reached > BASELINE_TTL_S

    def _learning(self) -> bool:
        return self._learn_end is not None and time.monotonic() < self._learn_end

    def fast(self, ref_ms: float) -> bool:
        """Whether a probe of ``ref_ms`` is within ``tol`` of the fastest yet."""
        return self.baseline_ms is not None and ref_ms <= self.baseline_ms * (1 + self.tol)

    # -- gating --------------------------------------------------------------------------

    def timed(self, work: Callable[[], T], budget_s: float = 10.0,
              attempts: int = 3) -> tuple[T, Settled]:
        """Run ``work`` (a timing) once the machine is fast, waiting up to ``budget_s``
        seconds in all; timed again (up to ``attempts`` times) when the reference shows the
        machine slowed during it. Returns ``work``'s result and the :class:`Settled` speed it
        ran at (below 1.0 when the budget ran out first)."""
        t0 = time.monotonic()
        best: tuple[T, Settled] | None = None
        for attempt in range(1, attempts + 1):
            with self._settled(t0, budget_s) as (cpu, before):
                value = work()
                after = self.probe()
            s = Settled(max(before, after), self.baseline_ms or after,
                        time.monotonic() - t0, cpu, attempt)
            if best is None or s.speed > best[1].speed:
                best = (value, s)
            if self.fast(s.ref_ms) or time.monotonic() - t0 >= budget_s:
                break
        assert best is not None
        return best[0], Settled(best[1].ref_ms, self.baseline_ms or best[1].ref_ms,
                                time.monotonic() - t0, best[1].cpu, attempt)

    @contextlib.contextmanager
    def _settled(self, t0: float, budget_s: float) -> Iterator[tuple[int | None, float]]:
        """Pin the calling thread to a fast CPU (or leave it where it may run) once the
        reference is fast there, or once the budget is spent; restore its CPUs after."""
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        choices: list[int | None] = (list(allowed) if self.threads == 1 and len(allowed) > 1
                                     else [None])
        best: tuple[float, int | None] = (float("inf"), None)
        if self.baseline_ms is None or self.stale():  # learn the machine's full speed again
            self.baseline_ms, self._fastest, self._own = None, [], False
            self._learn_end = time.monotonic() + min(self.learn_s, budget_s)
        try:
            while True:
                for cpu in choices:
                    if cpu is not None:
                        os.sched_setaffinity(0, {cpu})
                    ms = self.probe()
                    if self.fast(ms) and not self._learning():
                        best = (ms, cpu)
                        break
                    best = min(best, (ms, cpu), key=lambda b: b[0])
                else:
                    if time.monotonic() - t0 < budget_s:
                        time.sleep(0.2)
                        continue
                    if best[1] is not None:
                        os.sched_setaffinity(0, {best[1]})
                break
            yield best[1], best[0]
        finally:
            if len(choices) > 1:
                os.sched_setaffinity(0, set(allowed))

    # -- the stored baseline -------------------------------------------------------------

    def _load(self) -> tuple[float | None, float]:
        """The stored ``(fastest reference ms, when last reached)``; a bare number (the first
        format) was never stamped: stale."""
        if not self.store:
            return None, 0.0
        try:
            with open(self.store) as f:
                return _entry(json.load(f).get(self.key))
        except (OSError, ValueError, AttributeError):
            return None, 0.0

    def _save(self, ms: float) -> None:
        if not self.store:
            return
        try:
            os.makedirs(os.path.dirname(self.store) or ".", exist_ok=True)
            try:
                with open(self.store) as f:
                    data = json.load(f)
                data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                data = {}
            old_ms, old_at = _entry(data.get(self.key))
            if old_ms is not None and old_ms < ms and old_ms != self._saved_ms and \
                    time.time() - old_at <= BASELINE_TTL_S:
                self.baseline_ms, self._reached = old_ms, old_at  # another process's, fresh
                self._own = False
                return
            data[self.key] = {"ms": ms, "at": self._reached}
            self._stamped, self._saved_ms = time.time(), ms
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.store) or ".",
                                       prefix=".machine_speed-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.store)
        except OSError:
            pass  # a read-only cache only costs finding the fast state again


def _entry(v: Any) -> tuple[float | None, float]:
    if isinstance(v, dict):
        ms, at = v.get("ms"), v.get("at")
        if isinstance(ms, (int, float)) and ms > 0 and isinstance(at, (int, float)):
            return float(ms), float(at)
    elif isinstance(v, (int, float)) and v > 0:
        return float(v), 0.0
    return None, 0.0


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


_GATES: dict[tuple[int, float, str | None], SpeedGate] = {}


def process_gate(threads: int, tol: float = TOL, store: str | None = "default") -> SpeedGate:
    """This process's gate for ``threads`` (one per thread count and store, so every
    measurement in a process shares what it learnt of the machine's fastest state);
    ``store="default"``: :func:`default_store`."""
    path = default_store() if store == "default" else store
    key = (int(threads), float(tol), path)
    if key not in _GATES:
        _GATES[key] = SpeedGate(threads, tol=tol, store=path)
    return _GATES[key]


def at_speed(work: Callable[[], T], settle_s: float, tol: float = TOL,
             threads: int | None = None) -> tuple[T, Settled | None]:
    """``work()`` through this process's gate (:func:`process_gate` for ``threads``, default
    :func:`tvm_threads`) waiting up to ``settle_s`` for full speed; with ``settle_s`` 0 at
    once, and the speed is ``None``.

    >>> at_speed(lambda: 7, 0)
    (7, None)
    """
    if settle_s <= 0:
        return work(), None
    return process_gate(tvm_threads() if threads is None else threads, tol).timed(work,
                                                                                 settle_s)


def tvm_threads() -> int:
    """The threads TVM's CPU runtime runs with here: ``TVM_NUM_THREADS``, else the physical
    cores."""
    env = os.environ.get("TVM_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
