"""nasir's lowered reference networks against torchvision's own models.

torchvision's randomly initialised ``state_dict`` (BatchNorm statistics and shifts perturbed
so that BatchNorm takes part) is loaded, in order, into the lowered network of the matching
built-in space's reference; in eval mode at 224×224 both give the same logits up to float
rounding. torchvision is a dev dependency; ``import_torchvision`` lets its pure-Python
models import beside the CPU torch (see its docstring).
"""

from __future__ import annotations

import pytest
import torch

from nasir.backends.torch import load_weights, lower
from nasir.backends.torch.torchvision_import import import_torchvision
from nasir.passes import analyze
from nasir.spaces import get_space

tv = import_torchvision()

#: torchvision model → (nasir space, reference; None for a space without decisions)
PAIRS = {
    "mobilenet_v2": ("mobilenet_v2", None),
    "mnasnet1_0": ("mnasnet", "mnasnet_b1"),
    "mobilenet_v3_large": ("mobilenet_v3", "mobilenet_v3_large"),
    "efficientnet_b0": ("efficientnet", "efficientnet_b0"),
}


def _graph(space: str, ref: str | None, **opts):
    sp = get_space(space, **opts)
    return sp.instantiate(sp.reference(ref) if ref else {})


def _entries(m: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")]


def _calibrate_and_perturb_batch_norm(theirs: torch.nn.Module) -> None:
    """Running statistics from a batch (so that eval-mode activations keep depending on the
    input), then scaled and shifted at random, as are BatchNorm's weights and biases."""
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momentum = [m.momentum for m in bns]
    for m in bns:
        m.momentum = None  # a cumulative average: the statistics of the batch below
    theirs.train()
    with torch.no_grad():
        theirs(torch.randn(4, 3, 224, 224, generator=gen))
        for m, mom in zip(bns, momentum):
            m.momentum = mom
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.5, 1.5, generator=gen))
            m.running_mean.add_(torch.randn(m.num_features, generator=gen)
                                * m.running_var.sqrt() * 0.1)
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0, 0.1, generator=gen)
    theirs.eval()


@pytest.mark.parametrize("name", list(PAIRS))
def test_state_dict_order_and_shapes_match_torchvision(name):
    torch.manual_seed(0)
    theirs = getattr(tv.models, name)()
    g = _graph(*PAIRS[name])
    ours = lower(g)
    assert ([tuple(v.shape) for _, v in _entries(ours)]
            == [tuple(v.shape) for _, v in _entries(theirs)])
    assert analyze(g)["params"] == sum(p.numel() for p in theirs.parameters())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(PAIRS))
def test_torchvision_weights_give_torchvision_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(tv.models, name)()
    _calibrate_and_perturb_batch_norm(theirs)
    ours = lower(_graph(*PAIRS[name]), seed=3).eval()
    mine, src = list(ours.state_dict()), _entries(theirs)
    # key-order independent: hand the dict over reversed
    load_weights(ours, {k: v.numpy() for k, (_, v) in reversed(list(zip(mine, src)))})
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
        assert _rel(b[0], b[1]) > 0.05  # the logits depend on the input
        assert _rel(a, b) <= 1e-5, f"{name}: max |Δ| / max |y| = {_rel(a, b):.2e}"
        # and the comparison is fine enough to see BatchNorm's epsilon (1e-5 vs 1e-3)
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-3 if m.eps < 1e-4 else 1e-5
        assert _rel(ours(x), b) > 1e-4
