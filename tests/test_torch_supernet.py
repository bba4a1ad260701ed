"""Torch backend: weight-sharing supernets (modes, child extraction, pinned decisions)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasir.backends.torch.supernet import Supernet
from nasir.dsl import SpaceBuilder
from nasir.errors import AssignmentError, BackendError
from nasir.ops import (
    ConvBNActOp,
    FlattenOp,
    GlobalAvgPoolOp,
    IdentityOp,
    LinearOp,
    MBConvOp,
)
from nasir.passes import analyze
from nasir.spaces import get_space


@pytest.fixture(scope="module")
def nb201():
    sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
    return sp, Supernet(sp, mode="single", seed=0)


def _measured_step(net, x, y, seed=None):
    """Measured peak (profiler allocator events) of one SGD training step of ``net`` on
    ``(x, y)`` over its trainable parameters, after one warm-up step; ``seed`` reseeds
    torch before each forward (binarized sampling)."""
    from nasir.backends.torch.memory import measure_training_step

    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)

    def step():
        if seed is not None:
            torch.manual_seed(seed)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    return measure_training_step(net, step).total


def _assert_children_match(sp, net, seed, n=3):
    """For ``n`` random paths, the extracted child equals the supernet on that path."""
    import numpy as np

    from nasir.passes.sampling import sample

    x = torch.randn(3, *sp.body.inputs[0].op.shape)
    a = None
    for a in sample(sp, np.random.default_rng(seed), n):
        net.set_path(a)
        net.eval()
        assert torch.allclose(net(x), net.child(a).eval()(x), atol=1e-5)
    return a


def _toy_space():
    """Every kind of choice point: value, op, depth (repeat) and input (select)."""
    s = SpaceBuilder("toy", (1, 8, 8))
    stem = s.op(ConvBNActOp(out_channels=8, kernel=3, stride=2), s.input)
    k = s.value("k", (3, 5))
    se = s.value("se", (0.0, 0.25))

    def layer(b, h):
        return b.choose("op", {
            "mb": lambda t, z: t.op(MBConvOp(out_channels=8, kernel=k, expand=3, se_ratio=se),
                                    z),
            "dw": lambda t, z: t.op(MBConvOp(out_channels=8, kernel=k, expand=1), z),
            "skip": lambda t, z: t.op(IdentityOp(), z)}, h)

    x = s.repeat("depth", (1, 2, 3), layer, stem)
    y = s.op(ConvBNActOp(out_channels=8, kernel=1), x)
    z = s.select("inp", [stem, x, y], k=2, reduce="add")
    z = s.op(LinearOp(out_features=10), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), z)))
    return s.build(z)


def test_child_equals_supernet_on_every_toy_path():
    sp = _toy_space()
    net = Supernet(sp, mode="single", seed=1)
    x = torch.randn(3, 1, 8, 8)
    seen = 0
    for a in list(sp.enumerate())[::13]:
        net.set_path(a)
        child = net.child(a)
        assert sum(p.numel() for p in child.parameters()) == analyze(sp.instantiate(a))["params"]
        for train in (False, True):
            net.train(train)
            child.train(train)
            with torch.no_grad():
                torch.testing.assert_close(net(x), child(x), rtol=0, atol=0)
        seen += 1
    assert seen >= 5


@settings(max_examples=6)
@given(st.data())
def test_child_equals_supernet_on_random_nb201_paths(nb201, data):
    sp, net = nb201
    idx = [data.draw(st.integers(0, d.size - 1), label=d.label) for d in sp.decisions]
    a = sp.from_indices(idx)
    net.set_mode("single")
    net.set_path(a)
    net.eval()
    child = net.child(a)
    assert not child.training
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), child(x))


def test_modes_and_gradients(nb201):
    sp, net = nb201
    net.train()
    x = torch.randn(4, 3, 8, 8)
    net.set_mode("darts")
    net.zero_grad(set_to_none=True)
    out = net(x)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    assert torch.allclose(net(x), out)  # deterministic weights (BN in train mode aside)
    net.set_mode("gumbel", tau=0.5)
    assert net.tau == 0.5
    torch.manual_seed(0)
    g1 = net(x)
    g2 = net(x)
    assert not torch.allclose(g1, g2)  # fresh Gumbel noise every forward
    # binarized, weight step: only the sampled path's weights get gradients
    net.set_mode("binarized")
    for p in net.arch_parameters():
        p.requires_grad_(False)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    net(x).sum().backward()
    used = sum(p.grad is not None for p in net.weight_parameters())
    assert 0 < used < len(net.weight_parameters())
    assert set(net.last_path) == {d.label for d in sp.decisions}
    # binarized, arch step: the gate gives the logits a gradient
    for p in net.arch_parameters():
        p.requires_grad_(True)
        with torch.no_grad():
            p.zero_()
            p[3] = 4.0  # favour nor_conv_3x3: an all-'none' path has no gradient at all
    net.zero_grad(set_to_none=True)
    net(x).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
    net.set_mode("single")
    with pytest.raises(BackendError, match="mode"):
        net.set_mode("enas")


def test_derive_and_single_path_requires_a_path():
    sp = _toy_space()
    net = Supernet(sp, mode="single")
    with pytest.raises(AssignmentError):
        net(torch.randn(2, 1, 8, 8))
    with torch.no_grad():
        net.alphas["op"][2] = 5.0
    assert net.derive()["op"] == "skip"
    sp.check(net.derive())


def test_type_changing_decisions_must_be_pinned():
    sp = get_space("mnasnet", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(BackendError, match="b1_filters") as e:
        Supernet(sp)
    assert "fixed=" in str(e.value)
    s = SpaceBuilder("w", (1, 8, 8))
    c = s.value("c", (8, 16))
    x = s.op(ConvBNActOp(out_channels=c, kernel=3), s.input)
    x = s.choose("op", {"a": lambda b, h: b.op(ConvBNActOp(out_channels=8), h),
                        "b": lambda b, h: b.op(IdentityOp(), h)}, x)
    sp2 = s.build(s.op(LinearOp(out_features=3), s.op(FlattenOp(),
                                                       s.op(GlobalAvgPoolOp(), x))))
    net = Supernet(sp2, fixed={"c": 8}, mode="darts")
    assert set(net.decisions()) == {"op"}
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(AssignmentError, match="pins"):
        net.set_path({"c": 16, "op": "a"})
    net.set_path({"op": "b"})
    child = net.child({"op": "b"})
    net.set_mode("single")
    net.eval()
    child.eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), child(x))


def test_memory_prediction_orders_the_modes(nb201):
    sp, net = nb201
    a = sp.reference("best_cifar10")
    def pred(mode, arch_grad):
        return net.predict_memory(32, mode=mode, assignment=a, arch_grad=arch_grad).total

    darts, darts_a = pred("darts", False), pred("darts", True)
    binar, binar_a = pred("binarized", False), pred("binarized", True)
    single = pred("single", True)  # no gate in single mode: arch_grad does not matter
    # trained logits keep every weighted candidate output (darts) or the gated output
    assert darts_a > 1.3 * darts and darts > 1.5 * binar and binar == single
    assert binar_a > binar and pred("gumbel", False) == darts


def test_affine_false_freezes_candidate_batchnorm_only():
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    net = Supernet(sp, mode="darts", seed=0, affine=False)
    frozen = [p for p in net.parameters() if not p.requires_grad]
    assert frozen and all(float(p.abs().sum()) in (0.0, float(p.numel())) for p in frozen)
    ids = {id(p) for p in net.weight_parameters()}
    assert not any(id(p) in ids for p in frozen)
    # the stem's BatchNorm is not a candidate: it keeps its affine parameters
    stem_bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(m.weight.requires_grad for m in stem_bn)
    torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 8, 8)),
                                      torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is None for p in frozen)
    a = sp.reference("best_cifar10")
    net.set_mode("single")
    net.set_path(a)
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), net.child(a).eval()(x))


@pytest.mark.parametrize("channels,batch", [(4, 48), (8, 16)])
def test_supernet_memory_prediction_within_20_percent(channels, batch):
    """Predicted vs measured (profiler allocator events) peak of one training step, per
    mode, logits frozen and trained; and a budget between binarized and DARTS refuses
    DARTS only."""
    from nasir.backends.torch.memory import ResourceError, check_memory

    torch.set_num_threads(1)  # tiny tensors: a second thread only spins on a busy machine
    sp = get_space("nb201", input_shape=(3, 8, 8), channels=channels, cells_per_stage=1)
    a = sp.reference("best_cifar10")
    net = Supernet(sp, mode="darts", seed=0)
    x, y = torch.randn(batch, 3, 8, 8), torch.randint(0, 10, (batch,))
    for mode, arch_grad in [("darts", False), ("darts", True), ("binarized", True),
                            ("single", False)]:
        net.set_mode(mode)
        net.set_path(a)
        with torch.no_grad():  # peaked logits: binarized samples the path of ``a``
            for label, opts in net.decisions().items():
                logits = net.alphas[label.replace(".", "__")]
                logits.zero_()
                logits[opts.index(a[label])] = 0.0 if mode == "darts" else 30.0
        for p in net.arch_parameters():
            p.requires_grad_(arch_grad)
        measured = _measured_step(net, x, y)
        predicted = net.predict_memory(batch, assignment=a, arch_grad=arch_grad).total
        assert 0.8 < predicted / measured < 1.2, (mode, arch_grad, predicted, measured)
    binar = net.predict_memory(batch, mode="binarized", assignment=a, arch_grad=False)
    darts = net.predict_memory(batch, mode="darts", arch_grad=False)
    budget = (binar.total + darts.total) // 2
    check_memory(binar, budget, "binarized supernet")
    with pytest.raises(ResourceError, match="DARTS supernet exceeds the budget"):
        check_memory(darts, budget, "DARTS supernet")


def test_mixed_step_memory_keeps_no_shared_tensor_alive():
    """The mixed modes share a pure op's output (a state's pool in every edge leaving it)
    only while it is alive anyway: a DARTS weight step with frozen logits, where those
    outputs are not saved, peaks as the memory model predicts (holding them until the
    forward ended measured 0.81 of the prediction here); with trained logits the shared
    outputs are saved and still computed once (measured = predicted with sharing)."""
    torch.set_num_threads(1)
    sp = get_space("nb201", input_shape=(3, 16, 16), channels=8, cells_per_stage=1)
    net = Supernet(sp, mode="darts", seed=0)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    for arch_grad in (False, True):
        for p in net.arch_parameters():
            p.requires_grad_(arch_grad)
        ratio = net.predict_memory(16).total / _measured_step(net, x, y)
        assert 0.95 < ratio < 1.05, (arch_grad, ratio)


def test_two_path_binarized_estimator():
    """ProxylessNAS' two-path estimator: the forward is the active path's; only the two
    sampled logits of each decision get a CE gradient, equal to
    Σ_j ⟨∂L/∂out_j, o_j⟩ · p_j(δ_ij − p_i) over the pair; the rescaling keeps their
    log-sum-exp and leaves the other options' logits alone."""
    import torch.nn.functional as F

    from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

    sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
    net = Supernet(sp, mode="binarized", seed=0, binary_paths=2)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape))
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    torch.manual_seed(3)
    out = net(x)
    pairs, path = dict(net.last_pairs), dict(net.last_path)
    assert set(pairs) == {d.label for d in sp.decisions}
    assert all(a != b for a, b in pairs.values())
    F.cross_entropy(out, y).backward()
    # the forward equals the active path run alone (same weights, batch statistics)
    single = Supernet(sp, mode="single", seed=0)
    single.load_state_dict(net.state_dict())
    single.set_path(path)
    assert torch.allclose(single(x), out, atol=1e-6)
    moved = 0
    for lb, (ia, ib) in pairs.items():
        g = net.alphas[lb].grad
        others = [i for i in range(len(g)) if i not in (ia, ib)]
        assert torch.all(g[others] == 0)
        # a softmax over two logits: the pair's gradients are opposite
        assert torch.allclose(g[ia], -g[ib], atol=1e-7)
        moved += int(g[ia].abs() > 0)
    assert moved >= 3
    # the paper's rescaling after an optimizer step
    before = {k: v.detach().clone() for k, v in net.alphas.items()}
    torch.optim.Adam(net.arch_parameters(), lr=0.1).step()
    ProxylessSearch.after_arch_step(None, net, before)  # type: ignore[arg-type]
    for lb, (ia, ib) in pairs.items():
        new, old = net.alphas[lb].detach(), before[lb]
        idx = torch.tensor([ia, ib])
        assert torch.allclose(torch.logsumexp(new[idx], 0), torch.logsumexp(old[idx], 0),
                              atol=1e-5)
        rest = [i for i in range(len(new)) if i not in (ia, ib)]
        assert torch.allclose(new[rest], old[rest])
    with pytest.raises(BackendError, match="binary_paths"):
        Supernet(sp, binary_paths=3)


def test_two_path_memory_prediction_within_20_percent():
    """The two-path architecture step keeps one more output per choice; the prediction
    follows the measured peak (and exceeds the one-path step's)."""
    torch.set_num_threads(1)
    sp = get_space("nb201", input_shape=(3, 8, 8), channels=8, cells_per_stage=1)
    a = sp.reference("best_cifar10")
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    got = {}
    for paths in (1, 2):
        net = Supernet(sp, mode="binarized", seed=0, binary_paths=paths)
        with torch.no_grad():  # the path of ``a`` active, a definite second option
            for label, opts in net.decisions().items():
                logits = net.alphas[label.replace(".", "__")]
                i = opts.index(a[label])
                logits.zero_()
                logits[i], logits[(i + 1) % len(opts)] = 30.0, 29.0
        measured = _measured_step(net, x, y, seed=0)
        predicted = net.predict_memory(32, assignment=a, arch_grad=True).total
        assert 0.8 < predicted / measured < 1.2, (paths, predicted, measured)
        got[paths] = predicted
    assert got[2] > got[1]


def test_per_input_ops_free_the_reduction_cell_inputs():
    """Cell spaces: with one mixed edge per candidate input (DARTS/ENAS), a reduction
    cell's input choices (different resolutions) need no pinning; the child extracted for
    any path equals the supernet on it; the memory model follows the measured peak."""
    torch.set_num_threads(1)
    sp = get_space("darts", input_shape=(1, 8, 8), num_classes=10, channels=2, layers=3)
    with pytest.raises(BackendError, match="reduce_b"):
        Supernet(sp, mode="darts")  # one op on the mixed inputs: must be pinned
    net = Supernet(sp, mode="single", seed=0, per_input_ops=True)
    assert set(net.decisions()) == {d.label for d in sp.decisions}
    _assert_children_match(sp, net, seed=0)
    net.set_mode("darts")
    net.train()
    xb, yb = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    measured = _measured_step(net, xb, yb)
    predicted = net.predict_memory(8, arch_grad=True).total
    assert 0.8 < predicted / measured < 1.2


def test_combinatorial_value_choice_is_refused_with_a_hint():
    """NASNet's cell output (its loose ends, concatenated, no projection) depends on all
    input choices of its cell: the supernet says so at once instead of lowering 66M
    candidates."""
    sp = get_space("nasnet", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(BackendError, match="66,355,200 value combinations") as e:
        Supernet(sp, mode="single", per_input_ops=True)
    assert "pin" in str(e.value) and "nasnet.py" in str(e.value)


def test_enas_micro_cell_output_is_sliced_per_path():
    """ENAS-micro's projected cell output: one weight over all states, the loose ends'
    columns per path — every decision free, the child equals the supernet on its path,
    mixed modes refuse it with a hint."""
    torch.set_num_threads(1)
    sp = get_space("enas_micro", input_shape=(1, 8, 8), num_classes=10, filters=4, cells=1)
    net = Supernet(sp, mode="single", seed=0, per_input_ops=True)
    assert set(net.decisions()) == {d.label for d in sp.decisions}
    a = _assert_children_match(sp, net, seed=1)
    assert net.predict_memory(4, assignment=a).total > 0
    net.set_mode("darts")
    with pytest.raises(BackendError, match="single or binarized"):
        net(torch.randn(3, 1, 8, 8))


def _grads(net, x, y):
    net.zero_grad(set_to_none=True)
    out = net(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()
                          if p.grad is not None}


def test_zero_and_zero_weight_candidates_are_skipped_exactly():
    """Mixed modes do not run ``zero`` candidates nor candidates whose weight is exactly 0
    (logit −inf); the output and every gradient are those of running them."""
    from nasir.backends.torch.supernet.cells import _EdgeChoice
    from nasir.backends.torch.supernet.choices import _OpChoice

    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    net = Supernet(sp, mode="darts", seed=0, affine=False, per_input_ops=True)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    choices = [m for m in net.modules() if isinstance(m, (_OpChoice, _EdgeChoice))]
    assert all(len(m.zeros) == 1 for m in choices)  # nb201's `none` on every edge
    out, g = _grads(net, x, y)
    saved = [m.zeros for m in choices]
    for m in choices:
        m.zeros = frozenset()  # run the zero candidates too
    out_all, g_all = _grads(net, x, y)
    for m, z in zip(choices, saved):
        m.zeros = z
    torch.testing.assert_close(out, out_all)
    assert g.keys() == g_all.keys()
    for k in g:
        torch.testing.assert_close(g[k], g_all[k], msg=k)
    # logit −inf: that candidate does not run; −30 (weight ≈ 1e-13, runs) gives the same
    label = "edge_0_3"  # one label, shared by the cell of every stage
    cands = [m.regions["o3"] for m in choices if m.label == label]  # nor_conv_3x3
    assert len(cands) == 3
    skipped = {id(p) for c in cands for p in c.parameters()}
    names = [n for n, p in net.named_parameters() if id(p) not in skipped]
    calls = []
    for c in cands:
        c.mods["n1"].register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        net.alphas[label][3] = -30.0
    out_f, g_f = _grads(net, x, y)
    assert calls  # a tiny but non-zero weight: the candidate runs
    calls.clear()
    with torch.no_grad():
        net.alphas[label][3] = float("-inf")
    out_i, g_i = _grads(net, x, y)
    assert not calls
    assert not any(id(p) in skipped for n, p in net.named_parameters() if n in g_i)
    torch.testing.assert_close(out_i, out_f)
    for k in names:
        if k in g_f:
            torch.testing.assert_close(g_i[k], g_f[k], msg=k, atol=1e-6, rtol=1e-4)


def test_gumbel_hard_runs_one_path_with_straight_through_logit_gradients(nb201):
    """``gumbel_hard``: the forward is the sampled path's (a Gumbel-max draw from
    softmax(α)); only its weights get gradients; each logit vector gets the
    straight-through gradient ⟨∂L/∂out, o_k⟩ · ∂y_k/∂α; memory as a single path."""
    from nasir.backends.torch.supernet.mixing import _Ctx

    sp, net = nb201
    x = torch.randn(4, 3, 8, 8)
    net.train()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
            p[0] = float("-inf")  # never `none`: every sampled cell reaches the output
            p[3] = 1.0  # nor_conv_3x3 favoured: probability e / (e + 3) ≈ 0.475
    net.set_mode("gumbel_hard", tau=0.7)
    torch.manual_seed(0)
    draws = [_Ctx(net).index["edge_0_1"] for _ in range(2000)]
    freq = draws.count(3) / len(draws)
    assert abs(freq - torch.e / (torch.e + 3)) < 0.04, freq  # drawn from softmax(α), not τ
    torch.manual_seed(3)
    net.zero_grad(set_to_none=True)
    out = net(x)
    path = dict(net.last_path)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    used = sum(p.grad is not None for p in net.weight_parameters())
    assert 0 < used < len(net.weight_parameters())
    for lb in path:  # every logit of every decision: ∂y_k/∂α is dense
        g = net.alphas[lb.replace(".", "__")].grad
        assert g is not None and bool((g[1:] != 0).all()) and float(g[0]) == 0, (lb, g)
    # the same path in single mode gives the same output (the gate's value is 1)
    net.set_mode("single")
    net.set_path(path | {d.label: path.get(d.label, d.options[0]) for d in sp.decisions})
    with torch.no_grad():
        torch.testing.assert_close(net(x), out.detach())
    a = sp.reference("best_cifar10")
    assert (net.predict_memory(8, mode="gumbel_hard", assignment=a, arch_grad=True).total
            == net.predict_memory(8, mode="binarized", assignment=a, arch_grad=True).total)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()


def test_pad_concat_select_pads_like_the_child():
    """An input choice that combines by ``pad_concat`` (NAS-RL's anchors at different
    strides) zero-pads the smaller maps in the supernet as its child does (it used to be
    built as a plain concat, which cannot join 8x8 and 4x4 maps)."""
    s = SpaceBuilder("padcat", (1, 8, 8))
    a = s.op(ConvBNActOp(out_channels=4, kernel=3), s.input)
    b = s.op(ConvBNActOp(out_channels=4, kernel=3, stride=2), s.input)
    c = s.op(ConvBNActOp(out_channels=4, kernel=1), s.input)
    z = s.select("anchors", [a, b, c], k=2, reduce="pad_concat")
    z = s.op(LinearOp(out_features=3), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), z)))
    sp = s.build(z)
    net = Supernet(sp, mode="single", seed=0).eval()
    x = torch.randn(2, 1, 8, 8)
    for a_ in sp.enumerate():
        net.set_path(a_)
        with torch.no_grad():
            torch.testing.assert_close(net(x), net.child(a_).eval()(x), rtol=0, atol=0)
