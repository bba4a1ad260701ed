"""NetAdapt as in the paper (issue 21): per-layer filter counts from a per-layer latency
table, L2-norm filter selection with exact weight surgery, short- and long-term
fine-tuning; the per-block variant ``netadapt_blocks`` still runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasir.backends.torch.lowering import load_weights, lower, prepare
from nasir.backends.torch.pruning import (
    ChannelGroup,
    channel_groups,
    filter_norms,
    prune_state,
    select_filters,
    set_widths,
)
from nasir.backends.tvm.lut import layer_key, layers
from nasir.errors import NasirError
from nasir.ops import pair
from nasir.passes import analyze, verify
from nasir.spaces import get_space
from nasir.strategies.oneshot.netadapt import NetAdaptSearch
from nasir.strategies.oneshot.netadapt_blocks import NetAdaptBlocksSearch
from nasir.text import parse_graph


def _space():
    return get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)


def _se_skip_net():
    """The ``small`` reference with SE everywhere: residual adds and SE gates tie layers."""
    sp = _space()
    a = dict(sp.reference("small")) | {f"b{i}_se": 0.25 for i in range(1, 5)}
    return sp, prepare(sp.instantiate(sp.check(a)))


def _random_state(g, seed=0):
    """Lowered weights with non-trivial BN affine parameters and running statistics."""
    m = lower(g, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    for k, v in state.items():
        if k.endswith(("running_var", "weight")) and v.dim() == 1:
            state[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif k.endswith(("running_mean", "bias")):
            state[k] = torch.randn(v.shape, generator=gen) * 0.3
    return state


class SyntheticLUT:
    """A per-layer latency table keyed like nasir's TVM table (``layer_key``): each
    distinct layer gets a made-up latency once (MACs-like), the prediction is the sum."""

    def __init__(self):
        self.table: dict[str, float] = {}

    def _cost(self, n) -> float:
        out = n.type.shape
        if n.op.name in ("conv2d", "linear"):
            cin = n.inputs[0].type.shape[0]
            kh, kw = pair(n.op.kernel) if n.op.name == "conv2d" else (1, 1)
            return 1e-6 * cin * math.prod(out) * kh * kw + 1e-4
        return 1e-7 * math.prod(out) + 1e-5

    def predict(self, g) -> float:
        total = 0.0
        for n in layers(g):
            key = layer_key(n)
            if key not in self.table:
                self.table[key] = self._cost(n)
            total += self.table[key]
        return total


# -- L2-norm selection and weight surgery ---------------------------------------------------

def test_l2_selection_keeps_exactly_the_largest_norm_filters():
    g = parse_graph('''graph @g {
      %x = input() {shape=[2, 4, 4]}
      %1 = conv2d(%x) {out_channels=5, kernel=1}
      %2 = batch_norm(%1)
      %3 = conv2d(%2) {out_channels=3, kernel=1}
      %4 = global_avg_pool(%3) {keepdims=false}
      %5 = linear(%4) {out_features=2}
      return %5
    }''')
    verify(g)
    groups = {c.name: c for c in channel_groups(g)}
    assert sorted(groups) == ["1", "3"]  # the classifier's group reaches the output
    w = torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.0, 0.5], [-2.0, -2.0], [0.1, 2.9]])
    state = {"1.weight": w.reshape(5, 2, 1, 1)}
    # by hand: norms √2=1.414, 3, 0.5, √8=2.828, √8.42=2.902 → the three largest: 1, 3, 4
    assert np.allclose(filter_norms(state, groups["1"]).numpy(),
                       [2 ** 0.5, 3.0, 0.5, 8 ** 0.5, 8.42 ** 0.5])
    assert select_filters(state, groups["1"], 3) == [1, 3, 4]
    assert select_filters(state, groups["1"], 1) == [1]
    # tied sources (a residual add): the channel's filters taken together
    tied = ChannelGroup("a", 3, ("a", "b"), (), ())
    two = {"a.weight": torch.tensor([[3.0], [0.0], [1.0]]),
           "b.weight": torch.tensor([[0.0], [2.0], [2.0]])}
    assert select_filters(two, tied, 2) == [0, 2]  # 9, 4, 5
    with pytest.raises(NasirError, match="cannot keep"):
        select_filters(state, groups["1"], 6)


def _bn_outputs(m, names, x):
    got: dict[str, torch.Tensor] = {}
    hooks = [m.get_submodule(n).register_forward_hook(
        lambda _m, _i, o, n=n: got.__setitem__(n, o.detach())) for n in names]
    out = m(x)
    for h in hooks:
        h.remove()
    return out, got


def test_pruned_network_equals_the_original_with_the_dropped_channels_zeroed():
    """For every layer of a network with residual adds, SE gates, depthwise convolutions
    and batch norms: cut to the largest-norm half, the pruned network computes exactly
    what the original does once the dropped channels are cut off from the layers reading
    them (their input columns zeroed), and every tensor of the group is the original's
    restricted to the kept channels."""
    _, g = _se_skip_net()
    state = _random_state(g)
    groups = channel_groups(g)
    assert any(len(c.sources) > 1 for c in groups)  # a residual tie
    assert any(n for c in groups for n in c.channelwise
               if g.node(n).op.name == "depthwise_conv2d")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    orig = lower(g, seed=7)
    for c in groups:
        k = max(1, c.width // 2)
        keep = select_filters(state, c, k)
        drop = [i for i in range(c.width) if i not in keep]
        small = set_widths(g, {c.name: k}, groups)
        pruned = lower(small, seed=99)
        load_weights(pruned, prune_state(state, c, keep))  # strict: every shape fits
        zeroed = {key: v.clone() for key, v in state.items()}
        for n in c.consumers:
            zeroed[f"{n}.weight"][:, drop] = 0.0
        load_weights(orig, zeroed)
        bns = [n for n in c.channelwise if g.node(n).op.name == "batch_norm"]
        with torch.no_grad():
            y0, inner0 = _bn_outputs(orig.eval(), bns, x)
            y1, inner1 = _bn_outputs(pruned.eval(), bns, x)
        assert torch.allclose(y0, y1, atol=1e-5), c.name
        for n in bns:
            assert torch.allclose(inner0[n][:, keep], inner1[n], atol=1e-5), (c.name, n)
        for s in c.sources:
            assert torch.equal(pruned.state_dict()[f"{s}.weight"], state[f"{s}.weight"][keep])


def test_set_widths_reinfers_shapes_downstream():
    _, g = _se_skip_net()
    groups = {c.name: c for c in channel_groups(g)}
    c = next(c for c in groups.values() if any(
        g.node(n).op.name == "depthwise_conv2d" for n in c.channelwise))
    small = set_widths(g, {c.name: 8})
    for n in (*c.sources, *c.channelwise):
        assert small.node(n).type.shape[0] == 8
    for n in c.consumers:  # input channels follow: fewer MACs, same output width
        assert small.node(n).type == g.node(n).type
    assert analyze(small)["params"] < analyze(g)["params"]
    with pytest.raises(NasirError, match="no prunable channel group"):
        set_widths(g, {"nope": 8})


# -- the search ------------------------------------------------------------------------------

def test_each_iteration_meets_its_reduction_target_by_the_layer_table():
    sp = _space()
    lut = SyntheticLUT()
    se = NetAdaptSearch(sp, seed=0, lut=lut, budget_ratio=0.8,
                        reduction_ratio=0.08, reduction_decay=0.9, pretrain_epochs=1,
                        short_term_epochs=1, long_term_epochs=2, data_fraction=0.05)
    r = se.search()
    a = r.assignment
    assert a == sp.reference("small") and r.method == "netadapt"
    assert r.extra["met"] and r.extra["latency_ms"] <= r.extra["budget_ms"]
    assert r.epochs == len(r.history) - 1 >= 2
    base = prepare(sp.instantiate(a))
    groups = channel_groups(base)
    lat0 = r.extra["start_latency_ms"]
    assert lat0 == pytest.approx(lut.predict(base))
    widths = dict(r.extra["start_widths"])
    for prev, h in zip(r.history, r.history[1:]):
        target = prev["latency_ms"] - lat0 * 0.08 * 0.9 ** (h["iter"] - 1)
        assert h["target_ms"] == pytest.approx(target)
        assert h["met_target"] and h["latency_ms"] <= target
        # layers that cannot meet the target (their smallest count misses it) are not
        # fine-tuned while others can
        for name, k in h["not_trained"].items():
            assert k == 8 and lut.predict(set_widths(base, widths | {name: k}, groups)) > target
        for p in h["proposals"]:  # per layer: the largest count (step 8) meeting the target
            assert p["met_target"] and p["latency_ms"] <= target and p["filters"] % 8 == 0
            assert p["latency_ms"] == pytest.approx(lut.predict(
                set_widths(base, widths | {p["layer"]: p["filters"]}, groups)))
            bigger = p["filters"] + 8
            if bigger < p["was"]:
                assert lut.predict(set_widths(base, widths | {p["layer"]: bigger},
                                              groups)) > target
        best = max(h["proposals"], key=lambda p: (p["val_accuracy"], -p["latency_ms"]))
        assert (h["layer"], h["filters"]) == (best["layer"], best["filters"])
        widths[h["layer"]] = h["filters"]
    assert widths == r.extra["widths"] != r.extra["start_widths"]
    # recorded: per-layer choices, the fine-tune epochs, every setting
    assert r.extra["short_term_epochs"] == 1 and r.extra["long_term_epochs"] == 2
    assert r.extra["long_term_val_accuracy"] is not None
    assert r.extra["val_accuracy"] == r.extra["long_term_val_accuracy"]
    assert r.extra["settings"]["pick"] == "accuracy" and r.extra["variant"] == "netadapt"
    assert r.extra["settings"]["filter_step"] == 8
    # the adapted network: its text parses back, its weights load strictly
    again = parse_graph(r.extra["graph"])
    verify(again)
    assert analyze(again)["macs"] == analyze(se.graph)["macs"] < analyze(base)["macs"]
    load_weights(lower(se.graph), se.state)


def test_short_term_zero_and_given_weights_and_ratio_pick():
    """``init`` skips pre-training, ``short_term_epochs=0`` scores pruned weights as they
    are, ``pick="ratio"`` is the official code's pick; ``layers`` limits the search."""
    sp = _space()
    base = prepare(sp.instantiate(sp.reference("small")))
    init = _random_state(base)
    lut = SyntheticLUT()
    s = NetAdaptSearch(sp, lut=lut, init=init, short_term_epochs=0, long_term_epochs=0,
                       pick="ratio", layers=["28", "45"], budget_ratio=0.9,
                       reduction_ratio=0.05)
    r = s.search()
    assert set(r.extra["widths"]) == {"28", "45"} and r.extra["met"]
    assert r.extra["long_term_val_accuracy"] is None
    assert r.extra["settings"]["init"] and r.extra["settings"]["pick"] == "ratio"
    h = r.history[1]
    net_acc, net_lat = r.history[0]["val_accuracy"], r.history[0]["latency_ms"]

    def ratio(p):
        return (net_acc - p["val_accuracy"] + 1e-6) / (net_lat - p["latency_ms"] + 1e-5)

    best = min(h["proposals"], key=ratio)
    assert (h["layer"], h["filters"]) == (best["layer"], best["filters"])
    # a target no single layer can meet: every layer's largest cut competes (official code)
    far = NetAdaptSearch(sp, lut=lut, init=init, short_term_epochs=0, long_term_epochs=0,
                         reduction_ratio=0.9, budget_ratio=0.95).search()
    h = far.history[1]
    assert not h["met_target"] and h["latency_ms"] < far.history[0]["latency_ms"]
    assert far.extra["met"] and not h["not_trained"]
    assert all(not p["met_target"] and p["filters"] == 8 for p in h["proposals"])
    for bad in ({"pick": "best"}, {"budget_ms": 0.0}, {"filter_step": 0},
                {"train": {"nope": 1}}):
        with pytest.raises(NasirError):
            NetAdaptSearch(sp, lut=lut, **bad)
    with pytest.raises(NasirError, match="no prunable layer"):
        NetAdaptSearch(sp, lut=lut, layers=["999"]).search()


def test_netadapt_blocks_variant_still_runs():
    sp = _space()
    a = dict(sp.reference("small")) | {"b4_filters": 64}

    def mmacs(g):
        return analyze(g)["macs"] / 1e6

    full = mmacs(sp.instantiate(sp.check(a)))
    s = NetAdaptBlocksSearch(sp, seed=0, budget_ms=0.95 * full,
                             latency_fn=mmacs, decisions=["b4_filters"], step_ms=1e9,
                             finetune_epochs=1, pretrain_epochs=1, data_fraction=0.05)
    r = s.search(a)
    assert r.method == "netadapt_blocks" and r.extra["variant"] == "netadapt_blocks"
    assert r.extra["met"] and r.assignment["b4_filters"] < a["b4_filters"]
    assert r.extra["settings"]["decisions"] == ["b4_filters"]
