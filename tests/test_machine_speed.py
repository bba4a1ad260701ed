"""Timing only at the machine's full speed (nasir.backends.tvm.machine_speed, latency.settle_s)."""

import json
import os
import time

import pytest

from nasir.backends.tvm import MeasureConfig
from nasir.backends.tvm.machine_speed import SpeedGate
from nasir.errors import BackendError, NasirError
from nasir.text import parse_graph

GRAPH = '''graph @g {
  %x = input() {shape=[4, 8, 8]}
  %1 = conv2d(%x) {out_channels=4, kernel=3}
  return %1
}'''


def test_baseline_is_kept_per_thread_count(tmp_path):
    store = str(tmp_path / "speed.json")
    gate = SpeedGate(threads=1, store=store)
    ms = max(gate.probe() for _ in range(3))  # fewer than CONFIRM probes: their slowest
    assert gate.baseline_ms == pytest.approx(ms)
    with open(store) as f:
        data = json.load(f)
    (key, value), = data.items()
    assert "threads=1" in key and value["ms"] == pytest.approx(ms)
    assert abs(value["at"] - time.time()) < 60  # when it was last reached
    assert SpeedGate(threads=1, store=store).baseline_ms == pytest.approx(ms)  # read back
    assert SpeedGate(threads=2, store=store).baseline_ms is None  # another thread count


def test_one_fast_probe_does_not_become_the_baseline(tmp_path):
    """A spike (or a short fast phase) does not anchor the gate: a speed becomes the
    baseline only once CONFIRM probes ran at least that fast."""
    from nasir.backends.tvm.machine_speed import CONFIRM

    store = tmp_path / "speed.json"
    gate = SpeedGate(threads=1, store=str(store))
    probes = [gate.probe() for _ in range(CONFIRM + 1)]
    base = gate.baseline_ms
    assert base == pytest.approx(sorted(probes)[CONFIRM - 1])  # the CONFIRM-th fastest
    gate._record(base / 2)  # one probe twice as fast as anything seen: one of the five
    assert gate.baseline_ms == pytest.approx(sorted(probes)[CONFIRM - 2])
    assert not gate.fast(base * 1.5)  # and the machine's usual speed still gates as before
    assert gate.fast(base)
    for k in range(CONFIRM - 1):  # seen CONFIRM times: now it is this machine's full speed
        gate._record(base / 2 + k * 1e-6)
    assert gate.baseline_ms == pytest.approx(base / 2 + (CONFIRM - 2) * 1e-6)
    assert json.loads(store.read_text())[gate.key]["ms"] == pytest.approx(gate.baseline_ms)
    # a stored baseline (another process's) is not lowered by one probe either
    other = SpeedGate(threads=1, store=str(store))
    other._record(gate.baseline_ms / 3)
    assert other.baseline_ms == pytest.approx(gate.baseline_ms)


def test_gate_waits_for_full_speed_and_says_when_it_never_came(tmp_path):
    store = tmp_path / "speed.json"
    gate = SpeedGate(threads=1, store=str(store))
    real = gate.probe()
    # a fastest-ever reference this machine cannot reach: the gate must spend its budget
    store.write_text(json.dumps({gate.key: {"ms": real / 10, "at": time.time()}}))
    gate = SpeedGate(threads=1, store=str(store))
    t0 = time.monotonic()
    value, s = gate.timed(lambda: "timed", budget_s=0.6)
    waited = time.monotonic() - t0
    assert value == "timed"
    assert waited >= 0.6 and s.waited_s >= 0.6
    assert s.speed < 0.5 and s.ref_ms > s.baseline_ms  # not full speed, and it says so
    assert s.to_json()["speed"] == round(s.speed, 4)


@pytest.mark.parametrize("stored", ["stale", "first format"])
def test_a_stale_baseline_is_learnt_again(tmp_path, stored):
    """A fastest-ever reference no probe has come near for BASELINE_TTL_S (or one stored
    without a date) no longer holds the gate: it probes for learn_s, then times at the
    speed it found, and stores that with the time."""
    from nasir.backends.tvm.machine_speed import BASELINE_TTL_S

    store = tmp_path / "speed.json"
    gate = SpeedGate(threads=1, store=str(store))
    real = gate.probe()
    old = ({"ms": real / 10, "at": time.time() - 2 * BASELINE_TTL_S} if stored == "stale"
           else real / 10)
    store.write_text(json.dumps({gate.key: old}))
    gate = SpeedGate(threads=1, store=str(store), learn_s=0.5)
    assert gate.stale() and gate.baseline_ms == pytest.approx(real / 10)
    t0 = time.monotonic()
    value, _ = gate.timed(lambda: "timed", budget_s=30)
    assert value == "timed" and 0.5 <= time.monotonic() - t0 < 20
    assert gate.baseline_ms > real / 3 and not gate.stale()  # this machine's speed now
    saved = json.loads(store.read_text())[gate.key]
    assert saved["ms"] == pytest.approx(gate.baseline_ms) and saved["at"] > time.time() - 60


def test_gate_times_at_once_at_full_speed(tmp_path):
    gate = SpeedGate(threads=1, tol=1e6, store=str(tmp_path / "speed.json"),
                     learn_s=0)  # always fast, and trusted at once
    calls: list[int] = []
    value, s = gate.timed(lambda: calls.append(1) or len(calls), budget_s=30)
    assert value == 1 and calls == [1] and s.attempts == 1  # no wait, no second timing
    assert s.waited_s < 5 and 0 < s.speed <= 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two allowed CPUs")
def test_one_thread_is_pinned_to_one_cpu_while_timed_and_released_after():
    before = os.sched_getaffinity(0)
    gate = SpeedGate(threads=1, store=None)
    inside, s = gate.timed(lambda: os.sched_getaffinity(0), budget_s=0.5)
    assert len(inside) == 1 and inside <= before and s.cpu in inside
    assert os.sched_getaffinity(0) == before


def test_settle_s_is_checked():
    with pytest.raises(BackendError, match="settle_s"):
        MeasureConfig(settle_s=-1)
    with pytest.raises(BackendError, match="speed_tol"):
        MeasureConfig(speed_tol=0)


def test_host_paths_and_measure_say_the_speed_they_timed_at():
    from nasir.backends.tvm import measure
    from nasir.backends.tvm.host_compare import prepare_host_paths

    g = parse_graph(GRAPH)
    cfg = MeasureConfig(repeats=3, min_repeat_ms=1, settle_s=0.5)
    timed = prepare_host_paths(g, ("tvm", "onnxruntime"), threads=1).time(cfg)
    for t in timed.values():
        assert t.speed is not None and 0 < t.speed.speed <= 1 and t.median_ms > 0
    plain = prepare_host_paths(g, ("onnxruntime",), threads=1).time(
        MeasureConfig(repeats=3, min_repeat_ms=1))
    assert plain["onnxruntime"].speed is None  # settle_s 0: timed at once, no speed
    r = measure(g, "host", cfg)
    assert r.ok and 0 < r.extra["speed"]["speed"] <= 1


def test_latency_config_settle_default_and_env(monkeypatch):
    from nasir.runtime.experiment_sections import LatencyConfig

    monkeypatch.delenv("NASIR_LATENCY_SETTLE_S", raising=False)
    assert LatencyConfig().settle_s == 10.0
    monkeypatch.setenv("NASIR_LATENCY_SETTLE_S", "2.5")
    assert LatencyConfig().settle_s == 2.5
    assert LatencyConfig(settle_s=0).settle_s == 0
    monkeypatch.setenv("NASIR_LATENCY_SETTLE_S", "soon")
    with pytest.raises(NasirError, match="NASIR_LATENCY_SETTLE_S"):
        LatencyConfig()
