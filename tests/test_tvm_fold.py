"""Batch norm folded into the weights before the Relax lowering (bound weights): which batch
norms fold, and the folded program computes what the unfolded one (weights as parameters)
and PyTorch compute."""

from __future__ import annotations

import numpy as np
import torch

from nasir.backends.torch import load_weights
from nasir.backends.torch import lower as torch_lower
from nasir.backends.tvm import compile_graph, lower, param_specs, prepare, random_weights
from nasir.backends.tvm.relax_fold import fold_batch_norms
from nasir.text import parse_graph

#: %2 folds into a conv without bias; %4's conv is used twice, %6 follows an add (no affine):
#: both become x * scale + shift; %10 folds into the linear layer
NET = """graph @g {
  %x = input() {shape=[3, 6, 6]}
  %1 = conv2d(%x) {out_channels=4, kernel=3}
  %2 = batch_norm(%1)
  %3 = conv2d(%x) {out_channels=4, kernel=3, bias=true}
  %4 = batch_norm(%3)
  %5 = add(%3, %4)
  %6 = batch_norm(%5) {affine=false}
  %7 = add(%2, %6)
  %8 = global_avg_pool(%7) {keepdims=false}
  %9 = linear(%8) {out_features=5}
  %10 = batch_norm(%9)
  return %10
}"""

FAST = {"kind": "llvm", "opt-level": 0}


def test_which_batch_norms_fold():
    g = prepare(parse_graph(NET))
    w = random_weights(g, 3)
    f = fold_batch_norms(g, w)
    assert (sorted(f.biased), sorted(f.absorbed), sorted(f.affine)) == (
        ["1", "9"], ["10", "2"], ["4", "6"])
    assert f.weights["1.bias"].shape == (1, 4, 1, 1) and f.weights["9.bias"].shape == (1, 5)
    assert np.array_equal(w["3.weight"], f.weights["3.weight"])  # used twice: not scaled
    assert "batch_norm" not in lower(parse_graph(NET), w).script()
    assert "batch_norm" in lower(parse_graph(NET), w, bind_params=False).script()


def test_folded_program_computes_the_unfolded_one_and_torch():
    import tvm
    from tvm import relax

    g = parse_graph(NET)
    w = random_weights(prepare(g), 3)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    folded = compile_graph(g, FAST, batch=2, weights=w).run([x])[0]
    ex = tvm.compile(lower(g, w, batch=2, bind_params=False),
                     target=tvm.target.Target(FAST))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(w[k])
                                      for k in param_specs(prepare(g))]
    np.testing.assert_allclose(folded, vm["main"](*args).numpy(), rtol=1e-5, atol=1e-5)
    m = torch_lower(g, seed=0).eval()
    load_weights(m, w)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(folded, ref, rtol=1e-4, atol=1e-4)
