"""TVM backend: Relax lowering numerics vs the PyTorch backend, targets, compilation."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.backends.torch import load_weights
from nasir.backends.torch import lower as torch_lower
from nasir.backends.tvm import (
    compile_graph,
    host_cpu,
    lower,
    measure,
    param_specs,
    prepare,
    random_weights,
    resolve_target,
)
from nasir.errors import BackendError, TargetError
from nasir.graph import Graph
from nasir.ops import Op
from nasir.passes.hashing import graph_hash
from nasir.spaces import get_space, list_spaces
from nasir.text import parse_graph

#: fast LLVM codegen for the numeric tests (the Relax program is the same; -O0 only
#: shortens LLVM's part of the compile, which dominates)
FAST = {"kind": "llvm", "opt-level": 0}

_COMPILED: dict[tuple[str, int], object] = {}


def _compiled(g: Graph, weights, batch: int):
    key = (graph_hash(g) + str(sorted((k, float(np.sum(v))) for k, v in weights.items())),
           batch)
    if key not in _COMPILED:
        _COMPILED[key] = compile_graph(g, FAST, batch=batch, weights=weights)
    return _COMPILED[key]


def _torch_out(g: Graph, weights, x: np.ndarray) -> np.ndarray:
    m = torch_lower(g, seed=0).eval()
    load_weights(m, weights)
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def _check_numerics(g: Graph, seed: int = 0, batch: int = 2) -> float:
    weights = random_weights(prepare(g), seed)
    shape = tuple(prepare(g).inputs[0].type.shape)
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    ref = _torch_out(g, weights, x)
    got = _compiled(g, weights, batch).run([x])[0]
    assert got.shape == ref.shape
    err = _rel_err(got, ref)
    assert err <= 1e-4, f"relative error {err:.2e} for graph @{g.name}"
    return err


REFERENCES = [
    ("mobilenet_v2", {"input_shape": (3, 16, 16), "num_classes": 10}, "mobilenet_v2_1.0"),
    ("mnasnet", {"input_shape": (3, 16, 16), "num_classes": 10}, "mnasnet_a1"),
    ("mnasnet", {"input_shape": (3, 16, 16), "num_classes": 10}, "mnasnet_b1"),
    *[("nb201", {"input_shape": (3, 8, 8), "num_classes": 10, "channels": 4,
                 "cells_per_stage": 1}, r)
      for r in ("resnet", "best_cifar10", "all_conv3x3", "all_skip")],
]


@pytest.mark.parametrize("name,opts,ref", REFERENCES, ids=[r[2] for r in REFERENCES])
def test_reference_networks_match_torch(name, opts, ref):
    sp = get_space(name, **opts)
    _check_numerics(sp.instantiate(sp.reference(ref)))


#: size knobs shrunk where a space's ``build`` has them (cell spaces are huge otherwise)
SMALL = {"channels": 4, "cells_per_stage": 1, "filters": 8, "cells": 2, "layers": 3,
         "units": 2, "fc_layers": 1}


def small_space(name: str):
    """``name`` at 16×16 with 10 classes and its size knobs (if any) at small values."""
    import importlib
    import inspect

    from nasir.errors import NasirError
    from nasir.spaces import SPACES

    params = inspect.signature(importlib.import_module(SPACES[name]).build).parameters
    base = {"input_shape": (3, 16, 16), "num_classes": 10}
    small = {k: v for k, v in SMALL.items()
             if k in params and isinstance(params[k].default, int)}
    try:
        return get_space(name, **base, **small)
    except (NasirError, TypeError, ValueError):
        return get_space(name, **base)


@pytest.mark.parametrize("name", list_spaces())
@settings(max_examples=1, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_assignments_of_every_space_match_torch(name, seed):
    from nasir.passes.sampling import sample

    sp = small_space(name)
    a = sample(sp, np.random.default_rng(seed), 1)[0]
    _check_numerics(sp.instantiate(a), seed=seed % 1000, batch=1 + seed % 2)


def test_torch_state_dict_is_the_weight_convention():
    sp = get_space("mnasnet", input_shape=(3, 16, 16), num_classes=10)
    g = sp.instantiate(sp.reference("mnasnet_a1"))
    sd = torch_lower(g, seed=3).eval().state_dict()
    specs = param_specs(prepare(g))
    assert list(specs) == list(sd)
    assert all(tuple(sd[k].shape) == s for k, s in specs.items())
    # the torch module's own weights through TVM give its outputs
    weights = {k: v.numpy() for k, v in sd.items()}
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = torch_lower(g, seed=3).eval()(torch.from_numpy(x)).numpy()
    assert _rel_err(_compiled(g, weights, 1).run([x])[0], ref) <= 1e-4


TINY = """graph @tiny {
  %x = input() {shape=[4, 6, 6]}
  %1 = conv_bn_act(%x) {out_channels=8, kernel=3, stride=2}
  %2 = global_avg_pool(%1) {keepdims=false}
  %3 = linear(%2) {out_features=3}
  return %3
}"""


def test_weights_as_parameters_equal_bound_constants():
    import tvm
    from tvm import relax

    g = parse_graph(TINY)
    w = random_weights(prepare(g), 5)
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    bound = compile_graph(g, FAST, batch=2, weights=w).run([x])[0]
    mod = lower(g, w, batch=2, bind_params=False)
    assert len(mod["main"].params) == 1 + len(w)
    ex = tvm.compile(mod, target=resolve_target(FAST).tvm())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(w[k]) for k in param_specs(prepare(g))]
    np.testing.assert_allclose(vm["main"](*args).numpy(), bound, rtol=1e-5, atol=1e-6)


def test_seeded_weights_are_deterministic_and_batch_is_a_parameter():
    g = parse_graph(TINY)
    a, b = random_weights(prepare(g), 1), random_weights(prepare(g), 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert int(lower(g, batch=5)["main"].ret_ty.shape[0]) == 5


def test_bad_weights_and_batch_are_backend_errors():
    g = parse_graph(TINY)
    w = random_weights(prepare(g), 0)
    conv = next(iter(param_specs(prepare(g))))
    with pytest.raises(BackendError, match="weights lack"):
        lower(g, {k: v for k, v in w.items() if k != conv})
    bad = dict(w)
    bad[conv] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(BackendError, match=rf"{conv} has shape \[1, 1, 1, 1\]"):
        lower(g, bad)
    with pytest.raises(BackendError, match="batch"):
        lower(g, batch=0)


@dataclass(frozen=True)
class _MysteryOp(Op):
    """An op no backend lowers (not registered)."""

    name: ClassVar[str] = "mystery_test_op"

    def infer(self, ins):
        return ins[0]


def _mystery_graph() -> Graph:
    g = parse_graph(TINY)
    out = g.add(_MysteryOp(), [g.output])
    g.set_output(out)
    return g


def test_unlowerable_op_fails_the_measurement_and_the_caller_goes_on():
    from nasir.backends.tvm import MeasureConfig

    cfg = MeasureConfig(repeats=3, min_repeat_ms=1, warmup=1)
    results = [measure(g, FAST, cfg) for g in (_mystery_graph(), parse_graph(TINY))]
    assert results[0].status == "failed"
    assert "no Relax lowering for op mystery_test_op" in results[0].reason
    assert results[1].ok and results[1].median_ms > 0


# -- targets -------------------------------------------------------------------------


def test_target_registry_names_and_aliases():
    host = resolve_target("host")
    assert host.config == {"kind": "llvm", "mcpu": host_cpu()} and not host.cross
    assert resolve_target("llvm").config == host.config
    assert resolve_target("cuda").device == "cuda"
    for name in ("aarch64", "arm64"):
        t = resolve_target(name)
        assert t.cross and t.config["mtriple"].startswith("aarch64")
    assert resolve_target("armv7").config["mtriple"].startswith("armv7")


def test_target_dicts_json_strings_and_old_cli_strings():
    d = resolve_target({"kind": "llvm", "mcpu": "skylake"})
    assert d.key() == resolve_target('{"mcpu": "skylake", "kind": "llvm"}').key()
    assert resolve_target("llvm -mcpu=skylake").key() == d.key()
    cli = resolve_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+fp-armv8")
    assert cli.config["mattr"] == ["+neon", "+fp-armv8"] and cli.cross
    assert resolve_target("cuda -arch=sm_80").config == {"kind": "cuda", "arch": "sm_80"}


@pytest.mark.parametrize("bad", ["", "tpu", "{not json", "[1, 2]", 42,
                                 {"kind": "opencl"}, {"kind": "llvm", "bogus": 1},
                                 "llvm mcpu", {"mcpu": "x"}])
def test_malformed_or_unsupported_targets_list_the_valid_forms(bad):
    with pytest.raises(TargetError) as e:
        resolve_target(bad)
    assert "registry name (host, cuda, aarch64, armv7)" in str(e.value)
    assert '"llvm -mcpu=skylake"' in str(e.value)


@pytest.mark.parametrize("target", ["aarch64", "armv7"])
def test_cross_compile_for_arm_yields_a_library(target, tmp_path):
    g = parse_graph(TINY)
    c = compile_graph(g, target)
    assert c.target.cross and c.compile_s > 0
    path = c.export(str(tmp_path / "net.tar"))
    with tarfile.open(path) as tf:
        members = tf.getnames()
    assert any(m.endswith(".o") for m in members), members
    if c.target.cross_compiler() is None:
        with pytest.raises(BackendError, match="no cross compiler"):
            c.export(str(tmp_path / "net.so"))
    r = measure(g, target)
    assert r.status == "failed" and "RPC" in r.reason


def _has_cuda() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


_NO_GPU_MEASURE = """
import sys
from nasir.backends.tvm import measure
from nasir.text import parse_graph
r = measure(parse_graph(sys.argv[1]), "cuda")
print(r.status, "|", r.reason)
"""


def test_cuda_compiles_and_measurement_fails_cleanly_without_a_gpu():
    """CUDA code compiles on any machine; measuring it where no GPU is fails cleanly. On a
    GPU machine the no-GPU case runs in a subprocess that sees no device
    (``CUDA_VISIBLE_DEVICES=""``), so this path is tested everywhere."""
    import os
    import subprocess
    import sys

    g = parse_graph(TINY)
    c = compile_graph(g, "cuda")
    assert c.target.device == "cuda"
    if not _has_cuda():
        r = measure(g, "cuda")
        assert r.status == "failed" and "no cuda device" in r.reason
    else:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        out = subprocess.run([sys.executable, "-c", _NO_GPU_MEASURE, TINY], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.stdout.strip().startswith("failed |"), out.stdout + out.stderr
        assert "no cuda device" in out.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU (tvm.cuda(0).exist is False "
                    "here); runs on a GPU machine: pytest -m gpu tests/test_tvm_backend.py")
def test_cuda_measurement_and_numerics_on_a_gpu():
    """On a GPU: the CUDA library gives the host's outputs for the same weights, and the
    measurement loop returns a real latency."""
    g = parse_graph(TINY)
    w = random_weights(prepare(g), 3)
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    gpu = compile_graph(g, "cuda", batch=2, weights=w).run([x])[0]
    host = compile_graph(g, FAST, batch=2, weights=w).run([x])[0]
    np.testing.assert_allclose(gpu, host, rtol=1e-4, atol=1e-5)
    r = measure(g, "cuda")
    assert r.status == "ok", r.reason
    assert r.median_ms is not None and r.median_ms > 0 and len(r.times_ms) > 0


def test_tuning_needs_a_local_target():
    from nasir.backends.tvm import tune

    with pytest.raises(BackendError, match="needs the device"):
        tune(lower(parse_graph(TINY)), resolve_target("aarch64"), 4)
