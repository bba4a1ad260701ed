"""ENAS runs ENAS's method with the official code's settings by default (issue 21 item 1).

The numbers below are read from melodyguan/enas (commit 4bcfd73): ``scripts/
cifar10_macro_search.sh`` (MACRO), ``scripts/cifar10_micro_search.sh`` (MICRO),
``src/cifar10/main.py`` (MAIN: defaults of the flags the scripts leave out),
``src/utils.py`` (UTILS), ``src/cifar10/general_controller.py`` (GEN) and
``src/cifar10/micro_controller.py`` (MIC).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasir.errors import NasirError
from nasir.spaces import get_space
from nasir.strategies.base import make_strategy
from nasir.strategies.controller import enas_controller
from nasir.strategies.oneshot.enas import (
    ENAS_ADAM,
    ENAS_MACRO,
    ENAS_MICRO,
    EnasSearch,
    sgdr_lr,
    space_variant,
)


def _macro():
    return get_space("enas_macro", input_shape=(1, 8, 8), num_classes=10, filters=4, layers=3)


def test_macro_defaults_are_the_official_macro_search():
    s = ENAS_MACRO
    assert s.epochs == 310                      # MACRO:12 --num_epochs=310
    assert s.batch_size == 128                  # MACRO:11 --batch_size=128
    # MAIN:137 optim_algo="momentum" → UTILS:213-214 MomentumOptimizer(lr, 0.9,
    # use_nesterov=True)
    assert (s.w_optimizer, s.w_momentum, s.w_nesterov) == ("sgd", 0.9, True)
    # MACRO:23-27 --child_lr_cosine, lr_max 0.05, lr_min 0.0005, T_0 10, T_mul 2
    # (UTILS:154-183: set once an epoch, warm restarts)
    assert (s.lr_schedule, s.w_lr, s.w_lr_min, s.lr_t0, s.lr_t_mul) == \
        ("sgdr", 0.05, 0.0005, 10, 2)
    # MACRO:18 --child_l2_reg=0.00025, added as l2·Σw² to the loss (UTILS:118-123): torch's
    # weight_decay (grad += wd·w) is twice it
    assert s.w_weight_decay == pytest.approx(2 * 0.00025)
    # MAIN:54,127 ask for norm clipping at 5, but UTILS:149 appends the unclipped gradient
    assert s.grad_clip is None
    assert s.controller_steps == 50             # MACRO:34 --controller_train_steps=50
    assert s.controller_samples == 20           # MACRO:33 --controller_num_aggregate=20
    assert s.c_lr == 0.001                      # MACRO:35 --controller_lr=0.001
    assert (s.c_betas, s.c_eps) == ((0.0, 0.999), 1e-3)  # UTILS:217-219 beta1=0, eps 1e-3
    assert s.hidden == 64                       # MAIN:153 lstm_size=64
    assert (s.entropy, s.entropy_in) == (1e-4, "reward")  # MACRO:30; GEN:279-280
    assert s.baseline_decay == 0.99             # MAIN:72 controller_bl_dec
    assert s.baseline_init == 0.0               # GEN:283 tf.Variable(0.0)
    assert s.tanh_constant == 1.5               # MACRO:36 --controller_tanh_constant=1.5
    assert s.op_tanh_reduce == 1.0              # GEN takes no op_tanh_reduce (MACRO:37 unused)
    assert s.temperature is None                # MAIN:75, not set by MACRO
    # MACRO:38-39 --controller_skip_target=0.4 --controller_skip_weight=0.8
    assert (s.skip_target, s.skip_weight) == (0.4, 0.8)
    assert (s.input_sampling, s.anchor_keys, s.skip_logit_scale) == \
        ("anchor_attention", "next", 2.0)       # GEN:216-230 (logit [-q, q]: σ(2q))
    assert (s.derive_samples, s.derive_greedy, s.derive_batches) == (10, False, 1)  # MAIN:309


def test_micro_defaults_are_the_official_micro_search():
    s = ENAS_MICRO
    assert (s.epochs, s.batch_size) == (150, 160)  # MICRO:11-12
    assert s.w_weight_decay == pytest.approx(2 * 1e-4)  # MICRO:18 --child_l2_reg=1e-4
    assert (s.w_lr, s.w_lr_min, s.lr_t0, s.lr_t_mul) == (0.05, 0.0005, 10, 2)  # MICRO:23-27
    assert (s.controller_steps, s.controller_samples) == (30, 10)  # MICRO:34, 33
    assert s.c_lr == 0.0035                     # MICRO:35 --controller_lr=0.0035
    assert s.tanh_constant == 1.10              # MICRO:36
    assert s.op_tanh_reduce == 2.5              # MICRO:37, used at MIC:181-183
    assert s.entropy == 1e-4 and s.baseline_decay == 0.99  # MICRO:30; MAIN:72
    assert s.temperature is None                # MAIN:75 (temperature 5.0 is ptb_search.sh's)
    assert s.skip_weight == 0.0                 # the micro controller has no skip penalty


def test_variant_follows_the_space():
    assert space_variant(_macro()) == "enas_macro"
    assert space_variant(get_space("enas_micro", input_shape=(1, 8, 8), filters=4,
                                   cells=1)) == "enas_micro"
    nb = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    assert space_variant(nb) == "enas_micro"    # a cell space without skip subsets
    assert space_variant(get_space("nasrl")) == "enas_macro"  # anchor-point skip subsets
    assert EnasSearch(_macro()).settings == ENAS_MACRO
    assert EnasSearch(nb).settings == ENAS_MICRO and EnasSearch(nb).epochs == 150
    old = EnasSearch(nb, variant="enas_adam", epochs=3)
    assert old.variant == "enas_adam" and old.changed == {"epochs": 3}
    assert (old.settings.w_optimizer, old.settings.w_lr, old.settings.c_lr) == \
        ("adam", 3e-3, 3.5e-3)


def test_bad_options_name_the_valid_ones():
    with pytest.raises(NasirError, match="unknown ENAS option") as e:
        EnasSearch(_macro(), w_lrr=0.1)
    assert "skip_weight" in (e.value.hint or "")
    with pytest.raises(NasirError, match="unknown ENAS variant"):
        EnasSearch(_macro(), variant="enas_sgd")
    with pytest.raises(NasirError, match="lr schedule"):
        EnasSearch(_macro(), lr_schedule="step")
    with pytest.raises(NasirError, match="unknown ENAS option"):
        make_strategy("enas", _macro(), seed=0, w_lrr=0.1)


def test_sgdr_restarts_where_the_code_does():
    # 310 = 10 + 20 + 40 + 80 + 160 and 150 = 10 + 20 + 40 + 80: both end a cycle
    lrs = [sgdr_lr(e, 0.05, 0.0005, 10, 2) for e in range(311)]
    restarts = [e for e in range(1, 311) if lrs[e] > lrs[e - 1]]
    assert restarts == [10, 30, 70, 150, 310]
    assert lrs[0] == 0.05 and min(lrs) > 0.0005


def test_micro_op_logits_use_the_reduced_tanh_constant():
    micro = get_space("enas_micro", input_shape=(1, 8, 8), filters=4, cells=1)
    opts = {d.label: d.options for d in micro.decisions}
    c = enas_controller(micro, opts, np.random.default_rng(0), tanh_constant=1.1,
                        op_tanh_reduce=2.5)
    kinds = [d.kind for d in micro.decisions]
    with torch.no_grad():  # every head's logits: +100 for option 0, -100 for the rest
        for head in c.heads:
            head.weight.zero_()
            head.bias.fill_(-100.0)
            head.bias[0] = 100.0
    c.invalidate()
    for kind, p in zip(kinds, c.distributions()):
        # tanh saturates: log(p_0 / p_other) = 2 × the decision's constant
        constant = 1.1 / 2.5 if kind == "op" else 1.1
        assert float(np.log(p[0] / p[-1])) == pytest.approx(2 * constant)


def test_tiny_macro_run_records_its_settings_and_derives_a_valid_child():
    sp = _macro()
    calls = []
    search = EnasSearch(sp, seed=0, epochs=2, data_fraction=0.1, controller_steps=2,
                        controller_samples=3, derive_samples=2)
    real = search._accuracy

    def spy(net, batches):
        calls.append(sum(len(b[1]) for b in batches))
        return real(net, batches)

    search._accuracy = spy  # type: ignore[method-assign]
    r = search.search()
    a = sp.check(r.assignment)
    sp.instantiate(a)
    x = r.extra
    assert x["variant"] == "enas_macro"
    assert x["settings"]["skip_weight"] == 0.8 and x["settings"]["skip_target"] == 0.4
    assert x["settings"]["skip_logit_scale"] == 2.0 and x["settings"]["anchor_keys"] == "next"
    assert x["settings"]["w_optimizer"] == "sgd" and x["settings"]["w_nesterov"] is True
    assert x["changed"] == {"epochs": 2, "data_fraction": 0.1, "controller_steps": 2,
                            "controller_samples": 3, "derive_samples": 2}
    assert x["anchor_decisions"] == 2           # l1_skip, l2_skip
    # per epoch 2 updates × 3 children, then 2 derived children, each on one batch
    assert len(calls) == 2 * 2 * 3 + 2
    assert [h["w_lr"] for h in r.history] == [0.05, pytest.approx(sgdr_lr(1, 0.05, 5e-4,
                                                                          10, 2))]
    assert len(x["derive_scores"]) == 2


def test_registry_enas_records_the_variant_in_its_state():
    sp = _macro()
    s = make_strategy("enas", sp, seed=0, epochs=1, data_fraction=0.05, controller_steps=1,
                      controller_samples=2, derive_samples=1, skip_weight=0.5)
    state = s.state()
    assert state["planned_trials"] == 1 * 1 * 2 + 1 + 1  # children, derivation, derived
    assert state["variant"] == "enas_macro"
    assert state["settings"]["skip_weight"] == 0.5 and state["changed"]["skip_weight"] == 0.5
    assert state["settings"]["input_sampling"] == "anchor_attention"
    old = make_strategy("enas", sp, seed=0, variant="enas_adam")
    assert old.state()["settings"] == ENAS_ADAM.to_json()
