"""One-shot searches: DARTS, ENAS, FBNet, ProxylessNAS on tiny digits supernets, and on a
synthetic task that only one option can solve (each method must learn to pick it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nasir.backends.torch.supernet import Supernet
from nasir.dsl import SpaceBuilder
from nasir.errors import NasirError
from nasir.ops import AvgPool2dOp, ConvBNActOp, FlattenOp, GlobalAvgPoolOp, IdentityOp, LinearOp
from nasir.space import Space
from nasir.spaces import get_space
from nasir.strategies.base import make_strategy
from nasir.strategies.dedup import SpaceExhausted
from nasir.strategies.oneshot.common import (
    SearchData,
    additive_latency,
    derive_from_probs,
    is_connected,
    search_data,
)
from nasir.strategies.oneshot.darts import DartsSearch, arch_probs, discretize
from nasir.strategies.oneshot.enas import EnasSearch
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

torch.set_num_threads(1)


def _nb201():
    return get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=4,
                     cells_per_stage=1)


def _rows(sp):
    # none/skip are free, convolutions cost a lot: a latency loss must move away from them
    return {d.label: np.array([1.0, 1.0, 400.0, 900.0, 50.0]) for d in sp.decisions}


def test_darts_top2_distinct_inputs_and_no_none():
    sp = get_space("darts", input_shape=(1, 8, 8), num_classes=10, channels=4, layers=3)
    # a reduction cell's input choice changes the resolution: a supernet pins them
    fixed = {d.label: d.options[d.label.endswith("_in_b")] for d in sp.decisions
             if d.label.startswith("reduce") and "_in_" in d.label}
    net = Supernet(sp, mode="darts", seed=0, fixed=fixed)
    opts = net.decisions()
    with torch.no_grad():
        for lb in opts:
            net.alphas[lb].zero_()
            if lb.endswith("_in_a") or lb.endswith("_in_b"):
                net.alphas[lb][0] = 5.0  # both operands prefer state 0
            if "_op_" in lb:
                net.alphas[lb][opts[lb].index("none")] = 9.0  # none strongest
                net.alphas[lb][opts[lb].index("sep_conv_3x3")] = 3.0
    a = discretize(net)
    for lb in opts:
        if lb.endswith("_in_a") and opts[lb] != (0,):
            assert a[lb] != a[lb[:-1] + "b"]
            assert 0 in (a[lb], a[lb[:-1] + "b"])
        if "_op_" in lb:
            assert a[lb] == "sep_conv_3x3"
    assert net.derive()[next(lb for lb in opts if "_op_" in lb)] == "none"
    sp.instantiate(sp.check(a))


@pytest.mark.slow
def test_darts_second_order_gradient_differs_from_first():
    sp = _nb201()
    s = DartsSearch(sp, seed=0, order=2)
    net = s._build()
    d = search_data(16, 0, 0.1)
    (xw, yw), (xa, ya) = next(iter(d.train_w)), next(iter(d.train_a))
    g2 = s._arch_grad_unrolled(net, xw, yw, xa, ya)
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(xa), ya).backward()
    g1 = [p.grad.clone() for p in net.arch_parameters()]
    assert all(torch.isfinite(g).all() for g in g2)
    assert any(not torch.allclose(a, b) for a, b in zip(g1, g2))


def test_registry_entries_propose_the_derived_assignment():
    sp = _nb201()
    s = make_strategy("darts", sp, seed=0, epochs=2, warmup=1, data_fraction=0.1)
    a = s.propose(1)[0]
    assert a == s.searcher.net.space.check(discretize(s.searcher.net))
    with pytest.raises(SpaceExhausted, match="top_k=1"):  # one derived child, proposed once
        s.propose(1)
    sp.instantiate(a)


def test_enas_macro_space_derives_a_valid_child():
    sp = get_space("enas_macro", input_shape=(1, 8, 8), num_classes=10, filters=4, layers=3)
    r = EnasSearch(sp, seed=1, epochs=1, data_fraction=0.1, controller_steps=4,
                   derive_samples=3).search()
    assert len(r.extra["derive_scores"]) == 3
    g = sp.instantiate(r.assignment)
    assert g.output is not None


@pytest.mark.parametrize("cls,kw", [
    (FBNetSearch, {"epochs": 3, "data_fraction": 0.4}),  # straight-through: one sample a step
    (FBNetSearch, {"hard": False}),
    (ProxylessSearch, {"target_us": 50.0})], ids=["fbnet", "fbnet_soft", "proxylessnas"])
def test_latency_loss_lowers_expected_latency(cls, kw):
    sp = _nb201()
    rows = _rows(sp)
    start = float(sum(r.mean() for r in rows.values()))
    kw = {"epochs": 2, "data_fraction": 0.2} | kw
    r = cls(sp, seed=0, warmup=0, a_lr=0.1, latency_rows=rows, beta=2.0, alpha=5.0,
            **kw).search()
    assert r.extra["expected_latency_us"] < 0.8 * start
    assert r.extra["predicted_latency_us"] < start
    # none/skip are the cheap ops here: the connectivity-aware derivation keeps a path
    assert is_connected(sp, r.assignment)


def test_bad_options_are_nasir_errors():
    sp = _nb201()
    with pytest.raises(NasirError, match="order"):
        DartsSearch(sp, order=3)
    with pytest.raises(NasirError, match="target_us"):
        ProxylessSearch(sp, target_us=0.5)
    with pytest.raises(NasirError, match="weight optimizer"):
        DartsSearch(sp, epochs=2, warmup=1, data_fraction=0.1, w_optimizer="lamb").search()
    with pytest.raises(NasirError, match="warmup"):
        DartsSearch(sp, epochs=2, warmup=2)
    with pytest.raises(NasirError, match="target_us"):
        FBNetSearch(sp, target_us=0.0)
    with pytest.raises(NasirError, match="latency estimate"):
        FBNetSearch(sp, latency="median")
    with pytest.raises(NasirError, match="Gumbel"):
        ProxylessSearch(sp, latency="sampled")
    with pytest.raises(NasirError, match="pt_images"):
        DartsSearch(sp, pt_images=0)


@pytest.mark.slow
def test_netadapt_meets_a_budget_by_shrinking_filters():
    # the per-block-width variant (issue 21: ``netadapt`` is now the paper's per-layer method)
    from nasir.passes import analyze
    from nasir.strategies.oneshot.netadapt_blocks import NetAdaptBlocksSearch as NetAdaptSearch

    sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    a = {d.label: d.options[-1] for d in sp.decisions}

    def mmacs(g):
        return analyze(g)["macs"] / 1e6

    full = mmacs(sp.instantiate(sp.check(a)))
    r = NetAdaptSearch(sp, seed=0, budget_ms=0.95 * full, latency_fn=mmacs,
                       decisions=["b4_filters"], step_ms=1e9, finetune_epochs=1,
                       data_fraction=0.05).search(a)
    assert r.extra["met"] and r.extra["latency_ms"] <= 0.95 * full
    assert r.assignment["b4_filters"] < a["b4_filters"]
    with pytest.raises(NasirError, match="budget_ms"):
        NetAdaptSearch(sp, budget_ms=0.0, latency_fn=mmacs)


def test_connectivity_aware_derivation():
    sp = _nb201()
    # every edge prefers none (a latency loss' favourite): plain argmax disconnects
    probs = {d.label: np.array([0.5, 0.1, 0.15, 0.05, 0.2]) for d in sp.decisions}
    probs["edge_1_3"] = np.array([0.4, 0.35, 0.05, 0.05, 0.15])
    keep = derive_from_probs(sp, probs, none="keep")
    assert not is_connected(sp, keep)
    a = derive_from_probs(sp, probs, none="connect")
    assert is_connected(sp, a)
    # one switch reconnects (0 → 3 directly); edge_1_3's cheaper switch alone would not
    changed = {k for k in a if a[k] != keep[k]}
    assert changed == {"edge_0_3"} and a["edge_0_3"] == "avg_pool_3x3"
    ex = derive_from_probs(sp, probs, none="exclude")
    assert "none" not in ex.values()
    with pytest.raises(NasirError, match="none policy"):
        derive_from_probs(sp, probs, none="drop")


@pytest.mark.parametrize("kw", [{"epochs": 6, "data_fraction": 0.4},
                                {"hard": False, "epochs": 3, "data_fraction": 0.2}],
                         ids=["fbnet", "fbnet_soft"])
def test_lower_latency_target_gives_a_faster_derived_child(kw):
    sp = _nb201()
    rows = {d.label: np.array([10.0, 10.0, 60.0, 100.0, 30.0]) for d in sp.decisions}
    got = {}
    for t in (1000.0, 90.0):
        # beta=0 leaves FBNet's own latency term out: only the target constraint acts
        r = FBNetSearch(sp, seed=0, warmup=1, a_lr=0.1, beta=0.0, latency_rows=rows,
                        target_us=t, **kw).search()
        got[t] = additive_latency(sp, rows, r.assignment)
        assert r.extra["target_us"] == t
    assert got[90.0] < got[1000.0]
    assert got[90.0] <= 1.1 * 90.0


def test_darts_perturbation_selection_pins_a_non_none_op_per_edge():
    sp = _nb201()
    s = DartsSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.2, select="pt")
    r = s.search()
    assert "none" not in r.assignment.values()
    probs = arch_probs(s.net)
    for lb, p in probs.items():
        assert sorted(p.tolist())[-1] == 1.0  # pinned one-hot
        assert r.assignment[lb] == sp.decision(lb).options[int(np.argmax(p))]
    with pytest.raises(NasirError, match="selection"):
        DartsSearch(sp, select="best")


def test_darts_perturbations_are_scored_on_pt_images(monkeypatch):
    from nasir.strategies.oneshot import darts

    seen = []
    real = darts.perturbation_select

    def spy(net, batches, *a, **k):
        seen.append(sum(len(b[1]) for b in batches))
        return real(net, batches, *a, **k)

    monkeypatch.setattr(darts, "perturbation_select", spy)
    sp = _nb201()
    for n in (40, None):  # DARTS-PT's selection is the darts_pt variant's (issue 21)
        DartsSearch(sp, seed=0, variant="darts_pt", epochs=2, warmup=1, data_fraction=0.2,
                    pt_images=n).search()
    assert seen[0] == 40 and seen[1] > 40  # None: the whole architecture half


def test_fbnet_straight_through_trains_one_path_per_step():
    """``fbnet_gdas`` (FBNet's default before issue 21; ``fbnet`` is the paper's soft
    mixture now): the supernet runs ``gumbel_hard`` (one candidate per layer and step), the
    logits still move, and ``latency="sampled"`` uses the step's Gumbel mask."""
    sp = get_space("tiny_proxyless")
    rows = {d.label: np.linspace(10.0, 80.0, d.size) for d in sp.decisions}
    s = FBNetSearch(sp, seed=0, variant="fbnet_gdas", epochs=2, warmup=1, data_fraction=0.2,
                    latency_rows=rows)
    r = s.search()
    assert s.net.mode == "gumbel_hard" and s.settings.latency == "sampled"
    assert set(s.net.last_mask) == {d.label for d in sp.decisions}
    for m in s.net.last_mask.values():  # one-hot in value, a gradient through the gate
        assert int((m.detach() != 0).sum()) == 1 and abs(float(m.detach().sum()) - 1) < 1e-6
    moved = [max(p) - min(p) for p in r.extra["arch_probs"].values()]
    assert max(moved) > 1e-3
    soft = FBNetSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.2,
                       latency_rows=rows)  # the paper's LAT(a) = Σ m·LAT, soft m
    soft.search()
    assert soft.net.mode == "gumbel" and soft.settings.latency == "sampled"


def test_proxylessnas_on_the_digits_mbconv_space():
    """ProxylessNAS on its own kind of space (per-layer MBConv + zero, nothing pinned):
    the two-path search runs, moves the logits off uniform, its latency term lowers the
    expected latency, and the derived child is valid."""
    sp = get_space("tiny_proxyless")
    rows = {d.label: np.array([10.0 * (i + 1) if o != "zero" else 1.0
                               for i, o in enumerate(d.options)]) for d in sp.decisions}
    start = float(sum(r.mean() for r in rows.values()))
    r = ProxylessSearch(sp, seed=0, epochs=4, warmup=1, data_fraction=0.2, a_lr=0.3,
                        latency_rows=rows, target_us=40.0, beta=2.0, alpha=5.0).search()
    assert r.extra["expected_latency_us"] < 0.8 * start
    sp.instantiate(r.assignment)
    probs = r.extra["arch_probs"]
    assert all(abs(sum(p) - 1) < 1e-3 for p in probs.values())
    assert max(max(p) for p in probs.values()) > 1.5 / len(sp.decisions[1].options)


def test_netadapt_proposals_inherit_the_pruned_networks_weights():
    """A narrowed network starts from the wider one's weights (leading filters / input
    channels, every tensor of matching name), and the estimator trains from them."""
    from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
    from nasir.backends.torch.lowering import inherit_weights, lower

    sp = get_space("tiny_mnasnet", input_shape=(1, 8, 8), num_classes=10)
    wide = {d.label: d.options[-1] for d in sp.decisions}
    narrow = wide | {"b4_filters": 32}
    est = TrainingEstimator(TrainConfig(epochs=1, seed=0, data_fraction=0.2))
    r = est.estimate(sp.instantiate(sp.check(wide)), keep_state=True)
    state = est.last_state
    assert r.ok and r.inherited == 0 and state is not None
    m = lower(sp.instantiate(sp.check(narrow)), seed=1)
    assert inherit_weights(m, state) == len(m.state_dict())
    shrunk = [k for k, v in m.state_dict().items() if v.shape != state[k].shape]
    assert shrunk  # b4's filters and the head's input channels
    for k in shrunk:
        v = m.state_dict()[k]
        assert torch.equal(v, state[k][tuple(slice(0, d) for d in v.shape)])
    r2 = est.estimate(sp.instantiate(sp.check(narrow)), init=state)
    assert r2.ok and r2.inherited == len(m.state_dict()) and est.last_state is None


@pytest.mark.slow
def test_darts_on_its_cell_space_without_pinning():
    """DARTS on the DARTS space searches every decision (reduction-cell inputs included:
    one mixed edge per input) and derives two distinct inputs per block."""
    sp = get_space("darts", input_shape=(1, 8, 8), num_classes=10, channels=2, layers=3)
    r = DartsSearch(sp, seed=0, epochs=2, warmup=1, data_fraction=0.05).search()
    assert sorted(r.assignment) == sorted(d.label for d in sp.decisions)
    for kind in ("normal", "reduce"):
        for b in range(4):
            assert r.assignment[f"{kind}_b{b}_in_a"] != r.assignment[f"{kind}_b{b}_in_b"]
    sp.instantiate(r.assignment)


def test_enas_on_its_micro_space_searches_every_decision():
    micro = get_space("enas_micro", input_shape=(1, 8, 8), num_classes=10, filters=4,
                      cells=1)
    e = EnasSearch(micro, seed=0, epochs=1, data_fraction=0.05, controller_steps=3,
                   derive_samples=2).search()
    assert sorted(e.assignment) == sorted(d.label for d in micro.decisions)
    assert len(e.extra["derive_scores"]) == 2
    micro.instantiate(e.assignment)


# -- each method learns: one option alone solves the task ----------------------------------

def _orientation_space() -> Space:
    """A pointwise stem, one op decision, global pooling and a linear classifier. Only
    ``conv3x3`` is not equivariant under transposing the image: with any other option the
    network computes ``f(x) == f(xᵀ)``. It is the last option, so an unlearned search
    (uniform logits, argmax → index 0) derives ``skip``."""
    s = SpaceBuilder("orientation", (1, 8, 8))
    x = s.op(ConvBNActOp(out_channels=4, kernel=1), s.input)
    y = s.choose("op", {
        "skip": lambda b, h: b.op(IdentityOp(), h),
        "avg_pool": lambda b, h: b.op(AvgPool2dOp(kernel=3, stride=1, padding=1), h),
        "conv1x1": lambda b, h: b.op(ConvBNActOp(out_channels=4, kernel=1), h),
        "conv3x3": lambda b, h: b.op(ConvBNActOp(out_channels=4, kernel=3), h)}, x)
    return s.build(s.op(LinearOp(out_features=2), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), y))))


def _orientation_data(seed: int, n: int = 256) -> SearchData:
    """Class 0: each row constant (horizontal stripes of random levels), class 1: each
    column constant, plus a little noise. Class 1 is class 0 transposed, so a network with
    ``f(x) == f(xᵀ)`` is at chance (50 %); a 3×3 convolution separates them at once."""
    g = torch.Generator().manual_seed(1000 + seed)
    levels = torch.randn(2 * n, 8, generator=g)
    y = torch.randint(0, 2, (2 * n,), generator=g)
    rows = levels[:, :, None].expand(2 * n, 8, 8)
    cols = levels[:, None, :].expand(2 * n, 8, 8)
    x = torch.where(y[:, None, None] == 0, rows, cols) + 0.1 * torch.randn(2 * n, 8, 8,
                                                                           generator=g)
    x = x[:, None].contiguous()
    order = torch.Generator().manual_seed(seed)
    w = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=64, shuffle=True, generator=order)
    a = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=64, shuffle=True, generator=order)
    return SearchData(w, a, a)


_UNIFORM = {"op": np.full(4, 10.0)}  # every option costs the same: only accuracy decides
#: method → search; every one a short run of the method's own architecture learning
#: (DARTS' argmax of α, not DARTS-PT, whose perturbations would find conv3x3 from the
#: trained weights alone; ENAS derives its controller's greedy choice only)
_LEARNERS = {
    "darts": lambda sp, s: DartsSearch(sp, seed=s, epochs=10, warmup=1, select="argmax"),
    # ENAS' official (micro) settings, SGD lr 0.05 included (1e-2 suited the Adam it ran
    # before issue 21); derive_greedy: the derived child is the controller's greedy one
    "enas": lambda sp, s: EnasSearch(sp, seed=s, epochs=20, controller_steps=10,
                                     derive_samples=1, derive_greedy=True),
    "fbnet": lambda sp, s: FBNetSearch(sp, seed=s, epochs=20, warmup=2, a_lr=0.1,
                                       w_lr=1e-2, latency_rows=_UNIFORM),
    "proxylessnas": lambda sp, s: ProxylessSearch(sp, seed=s, epochs=20, warmup=1,
                                                  w_lr=1e-2, latency_rows=_UNIFORM,
                                                  target_us=100.0),
}


@pytest.mark.parametrize("method", list(_LEARNERS))
def test_each_method_learns_the_only_option_that_solves_the_task(method):
    sp = _orientation_space()
    picked = [_LEARNERS[method](sp, seed).search(_orientation_data(seed)).assignment["op"]
              for seed in range(3)]
    assert picked == ["conv3x3"] * 3, picked
