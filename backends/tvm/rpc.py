"""Remote measurement through TVM RPC: a tracker and a device key, as TVM's own tuning does.

The network is compiled here (cross-compiled for ARM targets), exported as a shared
library, uploaded to a device the tracker hands out for ``key``, loaded into a Relax VM
there and timed on the device. Any failure on the way (no device, a dropped session, a
timeout) ends the measurement as ``status="failed"`` with the reason.

:func:`local_cluster` starts a real tracker and server on loopback (tests, and trying the
remote path on one machine).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from nasir.backends.tvm.compile import Compiled, example_inputs
from nasir.backends.tvm.timing import LatencyResult, MeasureConfig, run_timing
from nasir.errors import BackendError, NasirError

__all__ = ["LocalCluster", "RemoteDevice", "local_cluster", "measure_remote"]


@dataclass(frozen=True)
class RemoteDevice:
    """Where to measure: a tracker ``host:port`` and a device ``key`` (or, with
    ``key=None``, an RPC server reached directly).

    >>> RemoteDevice.parse("127.0.0.1:9190", "rasp4").label()
    'rasp4@127.0.0.1:9190'
    >>> RemoteDevice.parse("nohost", "k")
    Traceback (most recent call last):
    ...
    nasir.errors.BackendError: RPC address 'nohost' is not HOST:PORT
      fix:   write e.g. --rpc 127.0.0.1:9190 --key rasp4
    """

    host: str
    port: int
    key: str | None = None
    priority: int = 1
    session_timeout: float = 600.0
    timeout_s: float = 600.0

    @staticmethod
    def parse(address: str, key: str | None = None, **kwargs: Any) -> RemoteDevice:
        """Read ``HOST:PORT``."""
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise BackendError(f"RPC address {address!r} is not HOST:PORT",
                               hint="write e.g. --rpc 127.0.0.1:9190 --key rasp4")
        return RemoteDevice(host, int(port), key, **kwargs)

    def label(self) -> str:
        """``key@host:port`` (or ``host:port`` for a direct server)."""
        return f"{self.key}@{self.host}:{self.port}" if self.key else f"{self.host}:{self.port}"

    def connect(self) -> Any:
        """Open an RPC session (through the tracker when a key is given)."""
        from tvm import rpc

        if self.key is None:
            return rpc.connect(self.host, self.port, session_timeout=self.session_timeout)
        tracker = rpc.connect_tracker(self.host, self.port)
        if _free_devices(tracker, self.key) == 0:
            raise BackendError(f"tracker {self.host}:{self.port} has no device with key "
                               f"{self.key!r}", hint="start an RPC server with that key")
        return tracker.request(self.key, priority=self.priority,
                               session_timeout=self.session_timeout, max_retry=2)


def _free_devices(tracker: Any, key: str, field: str = "total") -> int:
    """Servers registered under ``key`` (``total``) or idle ones (``free``)."""
    data = tracker.summary()
    if field == "free":
        return int(data.get("queue_info", {}).get(key, {}).get("free", 0))
    return sum(1 for s in data.get("server_info", [])
               if str(s.get("key", "")).split(":", 1)[-1] == key)


def _remote_run(c: Compiled, device: RemoteDevice, cfg: MeasureConfig, lib: str) -> tuple:
    from tvm import relax
    from tvm import runtime as rt

    sess = device.connect()
    sess.upload(lib)
    rlib = sess.load_module(os.path.basename(lib))
    dev = sess.cpu() if c.target.device == "cpu" else sess.cuda()
    vm = relax.VirtualMachine(rlib, dev)
    args = [rt.tensor(x, dev) for x in example_inputs(c.input_shapes, c.batch)]
    return run_timing(vm, dev, args, cfg)


def measure_remote(c: Compiled, device: RemoteDevice, cfg: MeasureConfig | None = None
                   ) -> LatencyResult:
    """Upload ``c`` to ``device`` and time it there; failures become failed results."""
    cfg = cfg or MeasureConfig(batch=c.batch)
    base = LatencyResult("failed", str(c.target), c.input_shapes[0], c.batch,
                         compile_s=c.compile_s, remote=device.label())
    with tempfile.TemporaryDirectory(prefix="nasir_rpc_") as tmp:
        lib = os.path.join(tmp, "net.so")
        try:
            c.export(lib)
        except NasirError as e:
            return replace(base, reason=f"export failed: {e.message}")
        except Exception as e:
            return replace(base, reason=f"export failed: {type(e).__name__}: {e}")
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["ok"] = _remote_run(c, device, cfg, lib)
            except BaseException as e:
                box["err"] = e

        t = threading.Thread(target=work, name="nasir-rpc-measure", daemon=True)
        t.start()
        t.join(device.timeout_s)
        if t.is_alive():
            return replace(base, reason=f"rpc: no answer from {device.label()} within "
                                        f"{device.timeout_s:g} s")
    if "err" in box:
        err = box["err"]
        msg = err.message if isinstance(err, NasirError) else \
            (str(err).strip().splitlines() or [type(err).__name__])[-1]
        return replace(base, reason=f"rpc: {msg}")
    times, med, cv, retries, flagged = box["ok"]
    return replace(base, status="ok", median_ms=med, cv=cv, times_ms=tuple(times),
                   retries=retries, flagged=flagged)


class LocalCluster:
    """A TVM RPC tracker and one server, both on loopback, registered under ``key``."""

    def __init__(self, key: str = "nasir-local", host: str = "127.0.0.1") -> None:
        from tvm.rpc.server import Server
        from tvm.rpc.tracker import Tracker

        self.key = key
        self.host = host
        self.tracker = Tracker(host=host, port=9190, port_end=9390, silent=True)
        self.server = Server(host=host, port=9400, port_end=9600,
                             tracker_addr=(host, self.tracker.port), key=key, silent=True)

    @property
    def device(self) -> RemoteDevice:
        """The server as a :class:`RemoteDevice` reached through the tracker."""
        return RemoteDevice(self.host, int(self.tracker.port), self.key, timeout_s=120.0)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the tracker lists the server as free."""
        import time

        from tvm import rpc

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if _free_devices(rpc.connect_tracker(self.host, self.tracker.port),
                                 self.key, "free") > 0:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise BackendError(f"RPC server {self.key!r} did not register within {timeout_s} s")

    def stop_server(self) -> None:
        """Stop the device server (the tracker stays up)."""
        self.server.terminate()

    def close(self) -> None:
        """Stop server and tracker."""
        for part in (self.server, self.tracker):
            with contextlib.suppress(Exception):  # already gone
                part.terminate()


@contextmanager
def local_cluster(key: str = "nasir-local") -> Iterator[LocalCluster]:
    """Start a loopback tracker + server for ``key``; stopped on exit."""
    c = LocalCluster(key)
    try:
        c.wait_ready()
        yield c
    finally:
        c.close()
