"""Issue 21: the paper names run the papers' methods (DARTS, FBNet, ProxylessNAS), each
variant has its own registry name, and every run records the variant and its settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasir.backends.torch.supernet import Supernet
from nasir.backends.torch.supernet.choices import _OpChoice
from nasir.errors import NasirError
from nasir.spaces import get_space
from nasir.spaces.darts import OPS
from nasir.strategies.base import STRATEGIES, make_strategy
from nasir.strategies.oneshot.common import search_data
from nasir.strategies.oneshot.darts import VARIANTS, DartsSearch, discretize
from nasir.strategies.oneshot.fbnet import FBNetSearch
from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

torch.set_num_threads(1)

NAMES = ("darts", "darts_first_order", "darts_pt", "fbnet", "fbnet_gdas", "proxylessnas",
         "proxylessnas_penalty")


def _darts_space():
    return get_space("darts", input_shape=(1, 8, 8), num_classes=10, channels=4, layers=3)


def _nb201():
    return get_space("nb201", input_shape=(1, 8, 8), num_classes=10, channels=4,
                     cells_per_stage=1)


def _rows(sp):
    return {d.label: np.array([1.0, 1.0, 400.0, 900.0, 50.0]) for d in sp.decisions}


def _official_parse(w: np.ndarray, steps: int = 4) -> list[tuple[str, int]]:
    """DARTS' genotype rule as quark0/darts' ``Network.genotype()._parse`` states it:
    per node, the two edges whose best non-``none`` op weighs most, each with that op."""
    none = OPS.index("none")
    gene, start, n = [], 0, 2
    for _ in range(steps):
        rows = w[start:start + n]
        strength = [max(r[k] for k in range(len(r)) if k != none) for r in rows]
        for j in sorted(range(n), key=lambda j: -strength[j])[:2]:
            k = max((k for k in range(len(rows[j])) if k != none), key=lambda k: rows[j][k])
            gene.append((OPS[k], j))
        start, n = start + n, n + 1
    return gene


def test_darts_space_has_one_alpha_per_edge_and_op():
    sp = _darts_space()
    net = DartsSearch(sp, seed=0)._build()
    edges = sum(2 + b for b in range(4))  # node b reads the 2 cell inputs and b nodes
    assert edges == 14
    assert sum(p.numel() for p in net.arch_parameters()) == 2 * edges * len(OPS)
    for kind in ("normal", "reduce"):
        for b in range(4):
            c = net.cell_edges[f"{kind}_b{b}"]
            assert tuple(net.alphas[c.key].shape) == (2 + b, len(OPS))
            assert c.labels == (f"{kind}_b{b}_in_a", f"{kind}_b{b}_in_b",
                                f"{kind}_b{b}_op_a", f"{kind}_b{b}_op_b")
    assert net.decisions() == {}  # no input or op logits of their own
    # α initialised as the code does: 1e-3 · N(0, 1), not zeros
    flat = torch.cat([p.detach().flatten() for p in net.arch_parameters()])
    assert 1e-4 < float(flat.std()) < 1e-2
    # darts_pt keeps today's factored logits: one vector per input and op decision
    pt = DartsSearch(sp, seed=0, variant="darts_pt")._build()
    assert not pt.cell_edges and len(pt.decisions()) == len(sp.decisions) == 32


def test_darts_derivation_is_the_papers_top2_rule():
    sp = _darts_space()
    net = Supernet(sp, mode="darts", seed=0, affine=False, edge_alphas=True)
    rng = np.random.default_rng(0)
    none = OPS.index("none")
    weights = {}
    with torch.no_grad():
        for k, p in net.alphas.items():
            p.copy_(torch.tensor(rng.normal(size=tuple(p.shape)), dtype=p.dtype))
            p[:, none] = 10.0  # none strongest on every edge: never picked
            weights[k] = F.softmax(p, -1).numpy()
    a = discretize(net)
    for kind in ("normal", "reduce"):
        w = np.concatenate([weights[f"{kind}_b{b}"] for b in range(4)])
        gene = _official_parse(w)
        for b in range(4):
            (op_a, in_a), (op_b, in_b) = gene[2 * b: 2 * b + 2]
            got = (a[f"{kind}_b{b}_op_a"], a[f"{kind}_b{b}_in_a"],
                   a[f"{kind}_b{b}_op_b"], a[f"{kind}_b{b}_in_b"])
            assert got == (op_a, in_a, op_b, in_b)
            assert in_a != in_b and "none" not in (op_a, op_b)
    sp.instantiate(sp.check(a))


def test_edge_supernet_equals_the_child_when_the_weights_are_one_hot():
    """A node sums a mixed op on every incoming edge: with all weight on the kept edges'
    ops and on ``none`` elsewhere, the supernet computes the derived child."""
    sp = _darts_space()
    net = Supernet(sp, mode="darts", seed=0, affine=False, edge_alphas=True)
    a = dict(sp.reference("darts_v2"))
    with torch.no_grad():
        for k, c in net.cell_edges.items():
            p = net.alphas[k]
            p.fill_(float("-inf"))
            p[:, c.ops.index("none")] = 0.0
            for in_lb, op_lb in zip(c.in_labels, c.op_labels):
                j = c.inputs.index(a[in_lb])
                p[j].fill_(float("-inf"))
                p[j, c.ops.index(a[op_lb])] = 0.0
    child = net.child(a)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net.train()
    child.train()
    with torch.no_grad():
        assert torch.allclose(net(x), child(x), atol=1e-5)
    with pytest.raises(NasirError, match="per-edge logits"):
        net.set_mode("single")


def test_paper_defaults_are_the_papers_numbers():
    d = VARIANTS["darts"].to_json()
    assert {k: d[k] for k in ("w_optimizer", "w_momentum", "w_lr", "w_lr_min",
                              "w_weight_decay", "lr_schedule", "grad_clip", "a_lr", "a_betas",
                              "a_weight_decay", "a_init_std", "batch_size", "epochs", "warmup",
                              "order", "alphas", "select", "none", "affine")} == {
        "w_optimizer": "sgd", "w_momentum": 0.9, "w_lr": 0.025, "w_lr_min": 0.001,
        "w_weight_decay": 3e-4, "lr_schedule": "epoch", "grad_clip": 5.0, "a_lr": 3e-4,
        "a_betas": [0.5, 0.999], "a_weight_decay": 1e-3, "a_init_std": 1e-3,
        "batch_size": 64, "epochs": 50, "warmup": 0, "order": 2, "alphas": "edge",
        "select": "argmax", "none": "exclude", "affine": False}
    sp = _nb201()
    fb = FBNetSearch(sp, latency_rows=_rows(sp)).settings
    assert (fb.alpha, fb.beta, fb.tau0, fb.hard, fb.latency) == (0.2, 0.6, 5.0, False,
                                                                "sampled")
    assert math.isclose(fb.tau_end, 5.0 * math.exp(-0.045) ** 90, rel_tol=1e-3)
    assert fb.target_us is None
    px = ProxylessSearch(sp, latency_rows=_rows(sp)).settings
    assert (px.alpha, px.beta, px.constraint, px.paths) == (0.2, 0.3, 0.0, 2)


def test_a_run_records_its_variant_settings_and_changes():
    sp = _nb201()
    s = make_strategy("darts", sp, seed=0, epochs=1, data_fraction=0.05)
    s.propose(1)
    st, extra = s.state(), s.result.extra
    assert st["variant"] == extra["variant"] == "darts"
    assert st["settings"] == extra["settings"]
    assert st["changed"] == extra["changed"] == {"epochs": 1, "data_fraction": 0.05}
    assert st["settings"] == VARIANTS["darts"].to_json() | st["changed"]
    # the job's result is an event: the history replays without training again
    assert [e["event"] for e in st["history"]] == ["job", "propose"]
    again = make_strategy("darts", sp, seed=0, epochs=1, data_fraction=0.05)
    again.replay(st["history"])
    assert again.result.assignment == s.result.assignment and again.searcher.net is None
    with pytest.raises(NasirError, match="variant"):
        make_strategy("darts", sp, variant="darts_pt")
    with pytest.raises(NasirError, match="unknown DARTS option"):
        DartsSearch(sp, w_lrr=0.1)
    with pytest.raises(NasirError, match="unknown DARTS variant"):
        DartsSearch(sp, variant="gdas")


#: each variant, its tiny run's options, and the settings it changes from its paper name
_VARIANTS = {
    "darts_first_order": ({"epochs": 1}, {"order"}),
    "darts_pt": ({"epochs": 2, "warmup": 1},
                 {"epochs", "warmup", "order", "w_optimizer", "w_lr", "w_lr_min",
                  "w_weight_decay", "lr_schedule", "a_lr", "a_init_std", "alphas", "select"}),
    "fbnet_gdas": ({"epochs": 2, "warmup": 1}, {"hard"}),
    "proxylessnas_penalty": ({"epochs": 2, "warmup": 1, "target_us": 50.0}, {"constraint"}),
}


@pytest.mark.parametrize("name", list(_VARIANTS))
def test_each_variant_runs_and_records_what_it_changes(name):
    sp = _nb201()
    opts, changes = _VARIANTS[name]
    if not name.startswith("darts"):
        opts = opts | {"latency_rows": _rows(sp)}
    s = make_strategy(name, sp, seed=0, data_fraction=0.05, **opts)
    a = s.propose(1)[0]
    sp.instantiate(a)
    st = s.state()
    assert st["variant"] == s.result.extra["variant"] == name
    paper = {"darts": "darts", "fbnet": "fbnet", "proxylessnas": "proxylessnas"}[
        name.split("_")[0]]
    base = s.searcher.variants[paper] if hasattr(s.searcher, "variants") else VARIANTS[paper]
    own = s.searcher.variants[name] if hasattr(s.searcher, "variants") else VARIANTS[name]
    assert set(own.changed_from(base)) == changes
    assert st["settings"] == own.to_json() | st["changed"]
    if name == "darts_pt":  # DARTS-PT pins each edge's chosen op (one-hot)
        assert all(max(p) == 1.0 for p in s.result.extra["arch_probs"].values())
    if name == "fbnet_gdas":
        assert s.result.extra["mode"] == "gumbel_hard"


def _grads_per_choice(net):
    """Per op choice of the supernet: how many of its candidates got a weight gradient."""
    out = []
    for m in net.modules():
        if isinstance(m, _OpChoice) and not m.fixed:
            got = [any(p.grad is not None and float(p.grad.abs().sum()) > 0
                       for p in r.parameters()) for r in m.regions.values()
                   if any(True for _ in r.parameters())]
            out.append(sum(got))
    return out


def test_fbnet_soft_mixture_trains_every_candidate_gdas_one_path():
    sp = _nb201()
    d = search_data(32, 0, 0.05)
    x, y = next(iter(d.train_w))
    counts = {}
    for variant in ("fbnet", "fbnet_gdas"):
        s = FBNetSearch(sp, seed=0, variant=variant, epochs=2, warmup=1, data_fraction=0.05,
                        latency_rows=_rows(sp))
        s.search()
        net = s.net
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        counts[variant] = _grads_per_choice(net)
        masks = [m.detach() for m in net.last_mask.values()]
        if variant == "fbnet":  # every candidate weighted, every logit gets gradient
            assert all(bool((m > 0).all()) for m in masks)
            assert all(bool((p.grad != 0).all()) for p in net.arch_parameters())
        else:
            assert all(int((m != 0).sum()) == 1 for m in masks)
    # NB201 edges have two candidates with weights (1×1 and 3×3 conv) per stage cell
    assert all(c == 2 for c in counts["fbnet"]), counts
    assert all(c <= 1 for c in counts["fbnet_gdas"]), counts


def test_proxylessnas_default_loss_has_no_penalty_term():
    sp = _nb201()
    t = 100.0
    ce, lat = torch.tensor(1.3), torch.tensor(2 * t)
    paper = 0.2 * 1.3 * (math.log(2 * t) / math.log(t)) ** 0.3
    s = ProxylessSearch(sp, latency_rows=_rows(sp), target_us=t)
    assert math.isclose(float(s.arch_loss(ce, lat) * s.over_target(lat)), paper, rel_tol=1e-6)
    pen = ProxylessSearch(sp, variant="proxylessnas_penalty", latency_rows=_rows(sp),
                          target_us=t)
    assert math.isclose(float(pen.arch_loss(ce, lat) * pen.over_target(lat)),
                        paper * 2 ** 4, rel_tol=1e-6)


def test_registry_lists_the_paper_names_and_their_variants():
    assert set(NAMES) <= set(STRATEGIES)


def test_paper_darts_searches_the_darts_space_end_to_end():
    """Second order on the DARTS cell space, per-edge α, the paper's derivation: every
    node two distinct inputs, no ``none``."""
    sp = _darts_space()
    r = DartsSearch(sp, seed=0, epochs=1, batch_size=16, data_fraction=0.03).search()
    a = r.assignment
    assert r.extra["arch_logits"] == 2 * 14 * len(OPS)
    for kind in ("normal", "reduce"):
        for b in range(4):
            assert a[f"{kind}_b{b}_in_a"] != a[f"{kind}_b{b}_in_b"]
            assert "none" not in (a[f"{kind}_b{b}_op_a"], a[f"{kind}_b{b}_op_b"])
    sp.instantiate(a)
