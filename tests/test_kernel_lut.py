"""The per-kernel latency table over a tuning database: real TVM, tiny graphs, tiny budgets.

A network's entries are its fused TIR workloads, one key per call; a kernel is timed once and
read back from SQLite by a later table; a workload tuned since is timed again under its new
record; the table's sum tracks the compiled network's measured latency.
"""

from __future__ import annotations

import os

import pytest

from nasir.backends.tvm.compile import compile_graph
from nasir.backends.tvm.kernel_lut import KernelLUT, graph_kernels
from nasir.backends.tvm.measure import MeasureConfig, measure_compiled
from nasir.backends.tvm.tuning import tune_graph
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.errors import BackendError
from nasir.text import parse_graph

CFG = MeasureConfig(repeats=5, min_repeat_ms=1)

TWICE = """graph @g {
  %x = input() {shape=[8, 8, 8]}
  %1 = conv2d(%x) {out_channels=8, kernel=3}
  %2 = relu(%1)
  %3 = conv2d(%2) {out_channels=8, kernel=3}
  %4 = relu(%3)
  %5 = conv2d(%4) {out_channels=16, kernel=3}
  return %5
}"""


@pytest.fixture()
def db(tmp_path):
    return TuningDatabase("host", str(tmp_path / "tuning"))


def test_keys_are_the_networks_kernel_calls_and_persist(tmp_path, db):
    g = parse_graph(TWICE)
    kernels = graph_kernels(g, db)
    calls = {wl: n for wl, n, _ in kernels}
    assert sorted(calls.values())[-1] == 2  # the two identical conv+relu share one workload
    path = str(tmp_path / "k.sqlite")
    lut = KernelLUT(path, db, config=CFG)
    keys = lut.ensure(g)
    assert len(keys) == sum(calls.values()) and len(set(keys)) == len(calls)
    assert lut.measured_now == len(calls) and all(k.endswith("@default") for k in keys)
    total = lut.layer_sum(g)
    assert total == pytest.approx(sum(lut.latency(k) for k in keys)) and total > 0
    lut.close()
    again = KernelLUT(path, db, config=CFG)  # read back, nothing timed again
    assert again.layer_sum(g) == pytest.approx(total) and again.measured_now == 0
    again.close()


def test_a_workload_tuned_since_is_timed_again_under_its_record(tmp_path, db):
    g = parse_graph(TWICE)
    lut = KernelLUT(str(tmp_path / "k.sqlite"), db, config=CFG)
    before = set(lut.ensure(g))
    tune_graph(g, db, 2, cost_model="random")
    after = set(lut.ensure(g))
    assert after.isdisjoint(before) and not any(k.endswith("@default") for k in after)
    assert {k.split("@")[0] for k in after} == {k.split("@")[0] for k in before}
    assert lut.measured_now == 2 * len(before)


def test_the_sum_tracks_the_compiled_network(tmp_path, db):
    g = parse_graph(TWICE)
    tune_graph(g, db, 2, cost_model="random")
    lut = KernelLUT(str(tmp_path / "k.sqlite"), db, config=CFG)
    c = compile_graph(g, "host", db=db)
    assert c.tuning.hits == c.tuning.workloads
    # the fastest of three measurements: another test's load only ever slows one down
    net = min(measure_compiled(c, MeasureConfig(repeats=9, min_repeat_ms=5)).median_ms
              for _ in range(3))
    # the network runs exactly these kernels (plus the VM's calls between them)
    assert 0.5 * net < lut.layer_sum(g) < 1.5 * net


def test_a_cross_target_is_refused(tmp_path):
    db = TuningDatabase("aarch64", str(tmp_path / "tuning"))
    with pytest.raises(BackendError, match="cannot run here"):
        KernelLUT(os.path.join(str(tmp_path), "k.sqlite"), db)


@pytest.mark.parametrize("rounds", [1, 3])
def test_each_kernel_keeps_its_fastest_of_timing_rounds(tmp_path, db, monkeypatch, rounds):
    """Every kernel is timed in ``timing_rounds`` separate windows and keeps the fastest."""
    import nasir.backends.tvm.kernel_lut as kl

    seen: dict[int, list[float]] = {}
    real = kl.run_timing

    def counting(fn, dev, args, cfg):
        out = real(fn, dev, args, cfg)
        seen.setdefault(id(fn), []).append(out[1])
        return out

    monkeypatch.setattr(kl, "run_timing", counting)
    g = parse_graph(TWICE)
    lut = KernelLUT(str(tmp_path / "k.sqlite"), db, config=CFG, timing_rounds=rounds)
    keys = lut.ensure(g)
    assert len(seen) == len(set(keys)) and all(len(v) == rounds for v in seen.values())
    assert sorted(lut.latency(k) for k in set(keys)) == pytest.approx(
        sorted(min(v) for v in seen.values()))
    lut.close()
