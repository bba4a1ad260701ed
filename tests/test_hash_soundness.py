"""Equal canonical hash ⇒ equal outputs, on NB201 cells, with an oracle that does not use
the hash.

Every module's weights (and BatchNorm statistics, randomised so that a BN shift
``BN(conv(0)) ≠ 0`` is visible) are drawn from a generator seeded only by the module's type,
its hyper-parameters and its tensor shapes: two modules of the same kind get the same
weights wherever they sit. Any two cells that compute the same expression of such modules
then give identical outputs, whatever identities make them equal, and nothing here reads
:mod:`nasir.passes.hashing` or the torch backend's hash-keyed ``init="hash"``. Cells with
equal canonical hashes must give identical outputs; cells with different hashes nearly
always give different ones (the hash is conservative: it may keep apart cells that compute
the same function, never the reverse).
"""

import zlib

import numpy as np
import torch
from torch import nn

from nasir.backends.torch.lowering import lower
from nasir.passes.hashing import assignment_hash
from nasir.passes.sampling import UniformSampler
from nasir.spaces import get_space


def _same_weights_per_kind(gm: nn.Module) -> None:
    """Weights from a generator seeded by (module type, hyper-parameters, tensor shapes)."""
    for m in gm.modules():
        tensors = [*m.named_parameters(recurse=False),
                   *((k, b) for k, b in m.named_buffers(recurse=False)
                     if b.is_floating_point())]
        if not tensors:
            continue
        kind = f"{type(m).__name__}|{m.extra_repr()}|" + ";".join(
            f"{k}{tuple(t.shape)}" for k, t in tensors)
        gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()))
        with torch.no_grad():
            for k, t in tensors:
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    v = {"weight": torch.rand(t.shape, generator=gen) + 0.5,
                         "bias": torch.randn(t.shape, generator=gen),
                         "running_mean": torch.randn(t.shape, generator=gen) * 0.1,
                         "running_var": torch.rand(t.shape, generator=gen) + 0.5}[k]
                else:
                    fan_in = max(1, t[0].numel()) if t.dim() > 1 else 1
                    v = torch.randn(t.shape, generator=gen) / fan_in ** 0.5
                t.copy_(v)


def _run(cell, a, x):
    gm = lower(cell.instantiate(a), seed=7)
    _same_weights_per_kind(gm)
    gm.eval()
    with torch.no_grad():
        return gm(x).numpy()


def test_equal_hash_means_equal_outputs_on_nb201_cells():
    sp = get_space("nb201")
    cell = sp.view
    rng = np.random.default_rng(0)
    samples = UniformSampler(sp).sample(rng, 60)
    # add known-equivalent variants: dead edges into a zero node, x + 0, skip chains
    samples += [a.replace(edge_0_1="none", edge_1_2="nor_conv_1x1", edge_1_3="avg_pool_3x3")
                for a in samples[:8]]
    samples += [a.replace(edge_0_1="none", edge_1_2="avg_pool_3x3", edge_1_3="skip_connect")
                for a in samples[:8]]
    x = torch.randn(2, *cell.body.inputs[0].op.shape, generator=torch.Generator().manual_seed(1))
    by_hash: dict[str, list[np.ndarray]] = {}
    for a in samples:
        by_hash.setdefault(assignment_hash(sp, a), []).append(_run(cell, a, x))
    merged = 0
    for outs in by_hash.values():
        for o in outs[1:]:
            np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)
            merged += 1
    assert merged >= 8  # the equivalent variants above really were merged
    reps = [outs[0] for outs in by_hash.values()]
    distinct = 0
    for i in range(len(reps)):
        for j in range(i):
            distinct += not np.allclose(reps[i], reps[j], rtol=1e-4, atol=1e-5)
    pairs = len(reps) * (len(reps) - 1) // 2
    # The hash is conservative, and modules of one kind share weights here, so a few
    # different-hash pairs may coincide (e.g. BN(conv1x1(0)) and BN(conv3x3(0)) are both
    # the BN shift). Nearly all must differ.
    assert distinct >= 0.99 * pairs, (distinct, pairs)
