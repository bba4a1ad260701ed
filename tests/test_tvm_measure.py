"""TVM backend: measurement, SQLite cache, RPC on loopback, the CLI, and latency LUTs."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from nasir.backends.tvm import (
    LatencyCache,
    LatencyLUT,
    LocalCluster,
    MeasureConfig,
    RemoteDevice,
    build_lut,
    layer_key,
    measure,
)
from nasir.backends.tvm.lut import FREE_OPS, layers, predict_dense, predict_rows
from nasir.cli import main
from nasir.spaces import get_space
from nasir.text import parse_graph

FAST = {"kind": "llvm", "opt-level": 0}
QUICK = MeasureConfig(repeats=4, warmup=1, min_repeat_ms=1)

NET = """graph @net {
  %x = input() {shape=[4, 8, 8]}
  %1 = conv_bn_act(%x) {out_channels=8, kernel=3}
  %2 = global_avg_pool(%1) {keepdims=false}
  %3 = linear(%2) {out_features=3}
  return %3
}"""


def test_measurement_reports_median_and_spread():
    r = measure(parse_graph(NET), FAST, MeasureConfig(batch=3, repeats=5, min_repeat_ms=1))
    assert r.ok and r.batch == 3 and r.input_shape == (4, 8, 8)
    assert len(r.times_ms) == 5 and r.median_ms == pytest.approx(np.median(r.times_ms))
    assert r.cv == pytest.approx(np.std(r.times_ms) / np.mean(r.times_ms))
    assert r.compile_s > 0 and not r.cached


def test_noisy_measurements_are_retried_and_flagged():
    cfg = MeasureConfig(repeats=4, warmup=0, min_repeat_ms=0, cv_threshold=1e-12,
                        max_retries=2)
    r = measure(parse_graph(NET), FAST, cfg)
    assert r.ok and r.flagged and r.retries == 2


def test_cache_is_keyed_by_hash_target_shape_batch_and_persists(tmp_path):
    path = str(tmp_path / "lat.sqlite")
    g = parse_graph(NET)
    first = measure(g, FAST, QUICK, cache=LatencyCache(path))
    again = measure(g, FAST, QUICK, cache=LatencyCache(path))  # a new process would do this
    assert not first.cached and again.cached and again.median_ms == first.median_ms
    cache = LatencyCache(path)
    assert len(cache) == 1
    assert cache.get(first.graph_key, "other", (4, 8, 8), 1) is None
    other_batch = measure(g, FAST, MeasureConfig(batch=2, repeats=3, min_repeat_ms=1),
                          cache=cache)
    assert not other_batch.cached and len(cache) == 2


# -- RPC -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(key="nasir-test")
    try:
        c.wait_ready()
        yield c
    finally:
        c.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_remote_measurement_through_tracker_and_key(cluster):
    r = measure(parse_graph(NET), FAST, QUICK, remote=cluster.device)
    assert r.ok, r.reason
    assert r.remote == f"nasir-test@127.0.0.1:{cluster.tracker.port}" and r.median_ms > 0


def test_cli_measures_remotely(cluster, capsys):
    rc = main(["latency", "nb201:resnet", "--resolution", "8", "--target", json.dumps(FAST),
               "--rpc", f"127.0.0.1:{cluster.tracker.port}", "--key", "nasir-test",
               "--repeats", "3", "--no-cache", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["status"] == "ok" and out["remote"].startswith("nasir-test@")


def test_rpc_failures_end_the_measurement_with_a_reason(cluster):
    g = parse_graph(NET)
    no_key = measure(g, FAST, QUICK, remote=RemoteDevice("127.0.0.1", cluster.tracker.port,
                                                         "no-such-device", timeout_s=60))
    assert no_key.status == "failed" and "no device with key 'no-such-device'" in no_key.reason
    refused = measure(g, FAST, QUICK,
                      remote=RemoteDevice("127.0.0.1", _closed_port(), None, timeout_s=60))
    assert refused.status == "failed" and refused.reason.startswith("rpc:")
    # the server drops the session after 1 s while the device is still timing
    slow = MeasureConfig(repeats=40, warmup=0, min_repeat_ms=100, max_retries=0)
    drop = RemoteDevice("127.0.0.1", cluster.tracker.port, "nasir-test", session_timeout=1,
                        timeout_s=120)
    dropped = measure(g, FAST, slow, remote=drop)
    assert dropped.status == "failed" and dropped.reason.startswith("rpc:")
    assert measure(g, FAST, QUICK).ok  # and the caller goes on


# -- CLI -----------------------------------------------------------------------------


def test_cli_latency_json_and_cache(tmp_path, capsys):
    args = ["latency", "nb201:resnet", "--resolution", "8", "--target", "host", "--json",
            "--repeats", "3", "--cache", str(tmp_path / "c.sqlite")]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "ok" and first["target"] == "host"
    assert first["median_ms"] > 0 and first["cv"] >= 0 and first["compile_s"] > 0
    assert first["input_shape"] == [3, 8, 8]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True


def test_cli_bad_input_is_a_clear_error(capsys):
    assert main(["latency", "nb201:resnet", "--target", "tpu"]) == 2
    assert "unknown target 'tpu'" in capsys.readouterr().err
    assert main(["latency", "nb201:resnet", "--key", "k"]) == 2
    assert main(["latency", "nb201:resnet", "--rpc", "nohost", "--key", "k"]) == 2


# -- latency LUT ---------------------------------------------------------------------

SMALL_NB201 = {"input_shape": (3, 8, 8), "num_classes": 10, "channels": 4,
               "cells_per_stage": 1}


@pytest.fixture(scope="module")
def lut_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lut") / "lut.sqlite")


@pytest.fixture(scope="module")
def nb_lut(lut_path):
    sp = get_space("nb201", **SMALL_NB201)
    return build_lut(sp, lut_path, FAST, config=QUICK, calibration=1)


def test_lut_predicts_layer_sum_plus_constant(nb_lut):
    sp = get_space("nb201", **SMALL_NB201)
    g = sp.instantiate(sp.reference("best_cifar10"))
    keys = [layer_key(n) for n in layers(g)]
    assert len(nb_lut) > 0 and nb_lut.measured_now > 0
    assert nb_lut.predict(g) == pytest.approx(
        sum(nb_lut.latency(k) for k in keys) + nb_lut.constant_ms)
    assert all(nb_lut.latency(k) == 0.0 for k, n in zip(keys, layers(g))
               if n.op.name in FREE_OPS)


def test_lut_is_persistent_each_layer_measured_once(nb_lut, lut_path):
    sp = get_space("nb201", **SMALL_NB201)
    again = LatencyLUT(lut_path, FAST, config=QUICK, scope=sp.name)
    assert len(again) == len(nb_lut) and again.constant_ms == nb_lut.constant_ms
    for r in sp.references:
        again.ensure(sp.instantiate(sp.reference(r)))
    assert again.measured_now == 0


def test_lut_arrays_for_numba(nb_lut):
    from nasir.passes.sampling import sample

    sp = get_space("nb201", **SMALL_NB201)
    cands = sample(sp, np.random.default_rng(1), 4)
    graphs = [sp.instantiate(a) for a in cands]
    rows = nb_lut.encode(graphs)
    keys, lat = nb_lut.arrays()
    assert rows.dtype == np.int32 and lat.shape == (len(keys),)
    want = [nb_lut.predict(g) for g in graphs]
    np.testing.assert_allclose(predict_rows(lat, rows, nb_lut.constant_ms), want)
    table = nb_lut.dense(sp, checks=3)
    assert table is not None and table.shape == (len(sp.decisions), 5)
    idx = np.array([sp.indices(a) for a in cands])
    np.testing.assert_allclose(predict_dense(table, idx, nb_lut.constant_ms), want)


def test_dense_table_refused_when_decisions_interact(tmp_path):
    from nasir.dsl import SpaceBuilder
    from nasir.ops import Conv2dOp

    s = SpaceBuilder("chain", (3, 4, 4))
    x = s.op(Conv2dOp(out_channels=s.value("c1", (2, 4)), kernel=1), s.input)
    x = s.op(Conv2dOp(out_channels=s.value("c2", (2, 4)), kernel=1), x)
    sp = s.build(x)
    lut = LatencyLUT(str(tmp_path / "chain.sqlite"), FAST, config=QUICK)
    assert lut.dense(sp, checks=4) is None
