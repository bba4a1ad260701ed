"""Tuning through TVM RPC: a workload's candidates are built here, uploaded through an RPC
session, timed there and removed (real MetaSchedule, one candidate). The session is TVM's
in-process ``rpc.LocalSession`` — the same session API (upload, load_module, device, remote
functions, remove) a tracker's device gives, without starting a tracker and a server that
import TVM in their own processes (14–26 s on the shared CI box); reaching a device through a
tracker is :meth:`RemoteDevice.connect`, tested with real servers in ``test_tvm_measure.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from nasir.backends.tvm import RemoteDevice, TuningDatabase, compile_graph
from nasir.errors import BackendError
from nasir.text import parse_graph

CONV = """graph @g {
  %x = input() {shape=[4, 8, 8]}
  %1 = conv2d(%x) {out_channels=8, kernel=3}
  %2 = relu(%1)
  return %2
}"""


class _Sessions:
    """A device whose sessions are TVM RPC sessions (counted, uploads recorded)."""

    def __init__(self) -> None:
        self.sessions = 0
        self.uploads: list[str | None] = []

    def connect(self):
        from tvm import rpc

        self.sessions += 1
        sess = rpc.LocalSession()
        upload = sess.upload

        def recording(data, target=None):
            self.uploads.append(target)
            return upload(data, target)

        sess.upload = recording
        return sess


def test_candidates_are_timed_through_an_rpc_session(tmp_path):
    db = TuningDatabase("host", str(tmp_path), cost_model="random")
    remote = _Sessions()
    g = parse_graph(CONV)
    c = compile_graph(g, "host", db=db, trials_per_workload=1, remote=remote)
    assert (c.tuning.workloads, c.tuning.tuned) == (1, 1)
    assert remote.sessions >= 1 and remote.uploads  # candidates went through the session
    (key,) = db.keys()
    secs = [float(s) for s in db.read(key)["records"][0][1]]
    assert secs and all(0 < s < 1 for s in secs)  # a real timing, not a failure's 1e10
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(c.run([x])[0], compile_graph(g, "host").run([x])[0],
                               rtol=1e-5, atol=1e-5)


def test_an_unreachable_device_records_nothing_and_a_cross_target_needs_one(tmp_path):
    db = TuningDatabase("host", str(tmp_path), cost_model="random")
    gone = RemoteDevice("127.0.0.1", 9, None, session_timeout=5, timeout_s=5)
    with pytest.raises(BackendError, match="could not reach the device"):
        compile_graph(parse_graph(CONV), "host", db=db, trials_per_workload=1, remote=gone)
    assert db.keys() == []  # not marked as tried: tuned when the device is back
    arm = TuningDatabase("aarch64", str(tmp_path))
    with pytest.raises(BackendError, match="needs the device") as e:
        compile_graph(parse_graph(CONV), "aarch64", db=arm, trials_per_workload=1)
    assert "remote=" in (e.value.hint or "")
