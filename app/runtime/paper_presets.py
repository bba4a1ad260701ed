"""The eleven paper presets (data for :mod:`nasir.runtime.presets`; each a
:class:`~nasir.runtime.preset_schema.Preset`).

Each names the paper's space, strategy, estimator and reward with the paper's settings where
nasir has them; what nasir cannot reproduce is a ``deviations`` item that says why. Strategy
options not given here are the strategy's own defaults, which are the paper's (issue 21:
paper names run the paper's method). A test builds every preset and runs it through
:func:`nasir.runtime.preflight.prepare`, so a preset cannot name an option that does not
exist.

>>> [p.name for p in PAPER_PRESETS][:4]
['nasrl', 'nasnet', 'metaqnn', 'pnas']
"""

from __future__ import annotations

from nasir.runtime.preset_schema import Preset, Scale

__all__ = ["PAPER_PRESETS"]

#: every preset trains on digits by default: it ships with nasir and nothing downloads
DIGITS = ("data: scikit-learn digits (8×8 grey, 10 classes) instead of CIFAR-10, because it "
          "ships with nasir and nothing downloads; `--data cifar10 --data-opt download=true` "
          "trains the children on the paper's data")
DIGITS_ONESHOT = ("data: the supernet trains on digits (8×8) instead of the paper's data set "
                  "(nasir's one-shot searches always use digits; `--data` only changes the "
                  "retraining of the derived architecture)")
NO_SCHEDULE = ("child training: nasir's trainer has no learning-rate schedule, so the "
               "paper's optimizer runs at a constant learning rate")
WORKERS = ("parallelism: the paper's {what} become nasir's workers (2 local processes by "
           "default, or a Ray cluster): far fewer trials run at once, so the strategy has "
           "more finished trials behind each proposal than the paper's did, and the search "
           "takes far longer")

NASRL = Preset(
    name="nasrl", system="NAS-RL",
    paper="Zoph & Le, Neural Architecture Search with Reinforcement Learning, ICLR 2017",
    space="nasrl", strategy="reinforce", budget=12_800,
    budget_note="12,800 child networks on 800 GPUs (§4.1)",
    paper_setting=("15-layer CIFAR-10 conv net (filter height/width 1-7, 24-64 filters, "
                   "anchor-point skips); REINFORCE with a moving-average baseline, Adam lr "
                   "0.0006, controller batches of m=8 children; reward = max validation "
                   "accuracy of the last 5 of 50 epochs, cubed; children SGD lr 0.1, "
                   "Nesterov momentum 0.9, weight decay 1e-4"),
    strategy_options={"reward": {"kind": "accuracy", "power": 3}, "lr": 0.0006,
                      "hidden": 35, "batch": 8, "input_sampling": "anchor_attention"},
    estimator_options={"epochs": 50, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                       "weight_decay": 1e-4},
    epochs={"estimator.options.epochs": 50},
    deviations=(
        DIGITS,
        WORKERS.format(what="800 GPUs (100 asynchronous controller replicas × 8 children)"),
        "depth schedule: the paper grows the net from 6 layers by 2 every 1,600 children; "
        "nasir's controller emits the 15-layer schema from the start (no curriculum)",
        "reward: the last epoch's validation accuracy cubed, not the best of the last 5 "
        "epochs (the trainer reports the final epoch)",
        "controller: one LSTM layer of 35 units, initialised in ±0.1 (the paper: two layers, "
        "±0.08)",
        NO_SCHEDULE,
    ),
)

METAQNN = Preset(
    name="metaqnn", system="MetaQNN",
    paper="Baker et al., Designing Neural Network Architectures using Reinforcement "
          "Learning, ICLR 2017",
    space="metaqnn", space_options={"paper": True}, strategy="metaqnn", budget=2_700,
    budget_note="2,700 CNNs on CIFAR-10 (ε schedule: 1,500 at ε=1, then 100 or 150 per ε "
                "down to 0.1)",
    paper_setting=("the paper's layer state space (conv/pool/FC/termination with its "
                   "representation-size rules); ε-greedy Q-learning, α=0.01, γ=1, Q₀=0.5, "
                   "128 replayed episodes per model; children trained 20 epochs with Adam "
                   "(lr 0.001, batch 128)"),
    strategy_options={"lr": 0.01, "discount": 1.0, "replays": 128, "q_init": 0.5,
                      "state": "layer"},
    estimator_options={"epochs": 20, "optimizer": "adam", "lr": 0.001, "batch_size": 128},
    epochs={"estimator.options.epochs": 20},
    scale={"strategy.options.budget": Scale("trials")},
    deviations=(
        DIGITS + " (at 8×8 the paper's representation-size rules allow fewer layers)",
        WORKERS.format(what="10 GPUs"),
        "child training: no learning-rate decay (the paper divides it by 5 every 5 epochs) "
        "and no final longer training of the top ten models",
    ),
)

NASNET = Preset(
    name="nasnet", system="NASNet",
    paper="Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, "
          "CVPR 2018",
    space="nasnet", space_options={"paper": True, "stem": "cifar", "cells_per_stage": 2,
                                   "filters": 32},
    strategy="ppo", budget=20_000,
    budget_note="about 20,000 child models, 500 GPUs over 4 days",
    paper_setting=("normal + reduction cells of B=5 blocks (two inputs, two of 13 ops, add or "
                   "concat); a one-layer LSTM of 100 units trained with PPO, lr 0.00035, "
                   "entropy weight 1e-5, baseline decay 0.95; children trained 20 epochs on "
                   "CIFAR-10"),
    strategy_options={"lr": 0.00035, "hidden": 100, "entropy": 1e-5, "baseline_decay": 0.95},
    estimator_options={"epochs": 20},
    epochs={"estimator.options.epochs": 20},
    deviations=(
        DIGITS,
        WORKERS.format(what="500 GPUs (a global work queue)"),
        "child size during the search: N=2 cells per stage, F=32 filters, CIFAR stem; the "
        "paper searches with small children too, but these two numbers are nasir's choice",
        "child training: nasir's default optimizer (Adam, lr 3e-3, constant), not the "
        "paper's child-training recipe",
        "PPO: nasir's update sizes (batch 5, 4 epochs, clip 0.2); the paper's are not "
        "reproduced",
    ),
)

ENAS = Preset(
    name="enas", system="ENAS (macro)",
    paper="Pham et al., Efficient Neural Architecture Search via Parameter Sharing, ICML 2018",
    space="enas_macro", strategy="enas", budget=310 * 50 * 20 + 10 + 1,
    budget_note="310 epochs of shared weights, each followed by 50 controller updates of 20 "
                "children (every child a trial scored with the shared weights), 10 derivation "
                "children, then the derived net trained from scratch (310 epochs)",
    paper_setting=("12-layer macro space, 36 filters, 6 branch ops, skips sampled by anchor "
                   "attention with a KL skip penalty (target 0.4, weight 0.8); shared weights "
                   "SGD (Nesterov) lr 0.05→0.0005 with warm restarts, batch 128; controller "
                   "Adam lr 0.001, 50 updates of 20 children an epoch, entropy 1e-4, tanh "
                   "constant 1.5 (melodyguan/enas scripts/cifar10_macro_search.sh; the "
                   "`enas` strategy's macro settings); retraining: 310 epochs, SGD lr 0.05, "
                   "batch 100, l2 2e-4 (cifar10_macro_final.sh)"),
    strategy_options={"epochs": 310, "controller_steps": 50, "controller_samples": 20,
                      "derive_samples": 10},
    estimator="shared",
    estimator_options={"final_options": {"epochs": 310, "optimizer": "sgd", "lr": 0.05,
                                         "momentum": 0.9, "weight_decay": 4e-4,
                                         "batch_size": 100}},
    epochs={"strategy.options.epochs": 310,
            "estimator.options.final_options.epochs": 310},
    scale={"strategy.options.controller_steps": Scale("share"),
           "strategy.options.controller_samples": Scale("share"),
           "strategy.options.derive_samples": Scale("share")},
    deviations=(
        DIGITS_ONESHOT,
        "retraining: the derived architecture is trained in the search-size space (12 "
        "layers, 36 filters, dropout 0.1), not the final script's 24-layer, 96-filter "
        "network with dropout 0.5 and auxiliary heads",
        NO_SCHEDULE + " (the paper's retraining uses cosine annealing with warm restarts)",
        "search details the `enas` strategy does not reproduce (its docstring lists them): "
        "rewards on a batch of the training split's architecture half rather than a "
        "held-out validation split, scored with BatchNorm batch statistics; the full "
        "entropy; no auxiliary heads or drop-path in the supernet",
        "a budget below the paper's (`--trials N`) scales the controller updates, their "
        "children and the derivation children in proportion (at least 1 each); the run "
        "needs epochs × updates × children + derivation + 1 trials",
    ),
)

PNAS = Preset(
    name="pnas", system="PNAS",
    paper="Liu et al., Progressive Neural Architecture Search, ECCV 2018",
    space="pnas", space_options={"progressive": True, "stem": "cifar", "cells": 6,
                                 "filters": 24},
    strategy="pnas", budget=1_160,
    budget_note="1,160 models: the 136 one-block cells, then K=256 per level up to B=5",
    paper_setting=("cells of up to B=5 blocks (8 ops), grown one block per level; beam "
                   "K=256; an ensemble of 5 LSTM predictors (the paper also reports an MLP) "
                   "trained with an L1 loss ranks the children; children trained 20 epochs "
                   "on CIFAR-10"),
    strategy_options={"profile": "paper", "surrogate": "lstm", "budget": 1_160},
    estimator_options={"epochs": 20},
    epochs={"estimator.options.epochs": 20},
    scale={"strategy.options.budget": Scale("trials")},
    deviations=(
        DIGITS,
        "child size during the search: 6 cells (N=2 per stage), F=24 filters, CIFAR stem; "
        "nasir's choice for the search-time proxy",
        NO_SCHEDULE,
    ),
)

MNASNET = Preset(
    name="mnasnet", system="MnasNet",
    paper="Tan et al., MnasNet: Platform-Aware Neural Architecture Search for Mobile, "
          "CVPR 2019",
    space="mnasnet", space_options={"paper": True}, strategy="ppo", budget=8_000,
    budget_note="8,000 models, 64 TPUv2 over 4.5 days",
    paper_setting=("factorized hierarchical space of 7 blocks (op, kernel, SE, skip op with "
                   "pooling, filters, layers); PPO; reward ACC·(LAT/T)^w with w=-0.07 (soft), "
                   "T=75 ms measured on a Pixel 1 phone; children trained 5 epochs on a proxy "
                   "ImageNet task"),
    estimator_options={"epochs": 5},
    reward={"kind": "mnasnet", "mode": "soft", "target": 20.0},
    objectives={"accuracy": "max", "latency_ms": "min"}, latency="on",
    epochs={"estimator.options.epochs": 5},
    deviations=(
        "data: digits (8×8) instead of the proxy ImageNet task (50K images), because it "
        "ships with nasir and nothing downloads",
        "latency: TVM-compiled and measured on the host instead of a Pixel 1 phone "
        "(`--target rpc --rpc HOST:PORT` measures on an ARM board)",
        "target T: 20 ms, about MnasNet-A1's host latency at 8×8 (the paper's T=75 ms was "
        "about MnasNet-A1's 78 ms on its phone); set yours with `--latency-target`",
        WORKERS.format(what="64 TPUv2"),
        "PPO: nasir's controller defaults (lr 0.0035, one LSTM layer of 64 units, batch 5, "
        "4 epochs, clip 0.2), not the paper's controller settings",
    ),
)

AMOEBANET = Preset(
    name="amoebanet", system="AmoebaNet (regularized evolution)",
    paper="Real et al., Regularized Evolution for Image Classifier Architecture Search, "
          "AAAI 2019",
    space="nasnet", space_options={"paper": True, "stem": "cifar", "cells_per_stage": 3,
                                   "filters": 24},
    strategy="regularized_evolution", budget=20_000,
    budget_note="20,000 models, 450 GPUs over 7 days",
    paper_setting=("the NASNet cell space; aging evolution with population P=100 and "
                   "tournament sample S=25, one mutation (hidden state, op or identity) per "
                   "child, no deduplication; children trained 25 epochs on CIFAR-10 "
                   "(N=3, F=24)"),
    strategy_options={"population": 100, "sample": 25, "dedup": False},
    estimator_options={"epochs": 25},
    epochs={"estimator.options.epochs": 25},
    scale={"strategy.options.population": Scale("cap", 0.5, 2),
           "strategy.options.sample": Scale("cap", 0.125, 2)},
    deviations=(
        DIGITS,
        WORKERS.format(what="450 GPUs (asynchronous workers)"),
        "mutation: nasir's shared mutation pass (one decision resampled to a different "
        "option), which covers the paper's hidden-state and op mutations but has no "
        "identity mutation",
        "child training: nasir's default optimizer (Adam, lr 3e-3, constant), not the "
        "paper's child-training recipe",
    ),
)

PROXYLESSNAS = Preset(
    name="proxylessnas", system="ProxylessNAS",
    paper="Cai et al., ProxylessNAS: Direct Neural Architecture Search on Target Task and "
          "Hardware, ICLR 2019",
    space="proxylessnas", strategy="proxylessnas", budget=1,
    budget_note="one search on ImageNet (120 epochs, 40 of weight warm-up), then the derived "
                "net is trained from scratch",
    paper_setting=("per-layer MBConv choice (3/5/7 kernels × expansion 3/6, zero on residual "
                   "layers) at fixed widths (32-16-24-40-80-96-192-320-1280); two-path "
                   "binarized gates; architecture Adam lr 1e-3, β=(0, 0.999), one step every "
                   "5 weight steps; latency loss "
                   "α·CE·(log LAT/log T)^β with α=0.2, β=0.3, T=80 ms on a phone "
                   "(mit-han-lab/proxylessnas search/imagenet_arch_search.py); retraining "
                   "300 epochs, SGD (Nesterov) lr 0.05 cosine, weight decay 4e-5, batch 256, "
                   "label smoothing 0.1 (search/imagenet_run_exp.py)"),
    strategy_options={"epochs": 120, "warmup": 40, "a_lr": 1e-3, "a_betas": [0.0, 0.999],
                      "arch_every": 5, "target_us": 15_000.0, "fixed": {
                          "stem_width": 32, "first_width": 16, "g2_width": 40,
                          "g3_width": 80, "g4_width": 96, "g5_width": 192, "g6_width": 320,
                          "head_width": 1280}},
    estimator_options={"epochs": 300, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                       "weight_decay": 4e-5, "batch_size": 256},
    epochs={"strategy.options.epochs": 120, "strategy.options.warmup": 40,
            "estimator.options.epochs": 300},
    deviations=(
        DIGITS_ONESHOT,
        "latency: the TVM per-layer table measured on the host instead of the paper's phone "
        "latency model; T = 15 ms, about ProxylessNAS-Mobile's host latency at 8×8 (the "
        "paper's T=80 ms was about its 78 ms on the phone)",
        "shared weights: Adam (nasir's latency searches) instead of SGD lr 0.025 with "
        "Nesterov momentum and a cosine schedule, batch 64 instead of 256",
        NO_SCHEDULE + " (the paper's retraining anneals it by a cosine) and without label "
        "smoothing",
    ),
)

FBNET = Preset(
    name="fbnet", system="FBNet",
    paper="Wu et al., FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable "
          "Neural Architecture Search, CVPR 2019",
    space="fbnet", space_options={"paper": True}, strategy="fbnet", budget=1,
    budget_note="one search (90 epochs on a 100-class ImageNet subset), then the derived net "
                "is trained from scratch",
    paper_setting=("22 layers × the 9 candidates of Table 2, fixed head; soft Gumbel-softmax "
                   "mixture of every candidate, temperature 5.0 annealed by 0.956 per epoch; "
                   "loss CE·α·log(LAT)^β with α=0.2, β=0.6 and a latency lookup table from a "
                   "Samsung S8"),
    strategy_options={"epochs": 90, "warmup": 0},
    estimator_options={"epochs": 90},
    epochs={"strategy.options.epochs": 90, "estimator.options.epochs": 90},
    deviations=(
        DIGITS_ONESHOT,
        "latency: the TVM per-layer table measured on the host instead of a Samsung S8 "
        "lookup table",
        "retraining: 90 epochs with nasir's default optimizer (nasir's choice; the paper's "
        "ImageNet training recipe is not reproduced)",
        "optimisation: weights train with Adam (lr 3e-3) instead of the paper's SGD, and "
        "θ takes an Adam step (lr 0.05) after every weight step instead of the paper's "
        "alternation by epoch (the `fbnet` strategy's digits-sized steps)",
    ),
)

DARTS = Preset(
    name="darts", system="DARTS",
    paper="Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019",
    space="darts", space_options={"layers": 8, "channels": 16}, strategy="darts", budget=1,
    budget_note="one search (50 epochs, 8 cells, C=16), then the derived cells are trained "
                "600 epochs",
    paper_setting=("normal + reduction cells of 4 nodes, 8 ops, one α per (edge, op); "
                   "second-order bilevel updates; weights SGD lr 0.025 (cosine to 0.001), "
                   "momentum 0.9, weight decay 3e-4, batch 64, gradient clip 5; α Adam lr "
                   "3e-4, weight decay 1e-3; derivation: top-2 incoming edges, strongest "
                   "non-zero op (quark0/darts cnn/train_search.py; the `darts` strategy's "
                   "defaults); retraining 600 epochs, SGD lr 0.025, batch 96, drop-path 0.2 "
                   "(cnn/train.py)"),
    strategy_options={"epochs": 50},
    estimator_options={"epochs": 600, "optimizer": "sgd", "lr": 0.025, "momentum": 0.9,
                       "weight_decay": 3e-4, "batch_size": 96, "drop_path": 0.2},
    epochs={"strategy.options.epochs": 50, "estimator.options.epochs": 600},
    deviations=(
        DIGITS_ONESHOT,
        "retraining: the derived cells are trained in the search network (8 cells, C=16), "
        "not the 20-cell, C=36 evaluation network, without cutout or the auxiliary head",
        NO_SCHEDULE + " in the retraining (the search's weights follow the code's cosine)",
    ),
)

NETADAPT = Preset(
    name="netadapt", system="NetAdapt",
    paper="Yang et al., NetAdapt: Platform-Aware Neural Network Adaptation for Mobile "
          "Applications, ECCV 2018",
    space="mobilenet_v2", strategy="netadapt", budget=2000,
    budget_note="an upper bound: the run ends itself when the latency budget is met (or "
                "after max_iters = 30 iterations) — a trial trains the start network, one "
                "trial per layer per iteration short-term fine-tunes its proposal, a last "
                "trial fine-tunes the adapted network long-term",
    paper_setting=("start from a trained network; each iteration proposes, per layer, the "
                   "largest filter count that cuts the measured latency by the iteration's "
                   "reduction, keeps the filters of largest L2 norm, short-term fine-tunes "
                   "each proposal and keeps the most accurate; the reduction decays each "
                   "iteration (official code: 2.5 % of the start latency, × 0.96); the "
                   "result is fine-tuned long-term"),
    strategy_options={"pick": "accuracy"},
    estimator_options={"epochs": 5},
    epochs={"strategy.options.long_term_epochs": 5, "strategy.options.pretrain_epochs": 5,
            "strategy.options.short_term_epochs": 1, "estimator.options.epochs": 5},
    deviations=(
        "data: digits (8×8) instead of ImageNet, because it ships with nasir and nothing "
        "downloads",
        "network: MobileNetV2-1.0 stands in for the paper's MobileNetV1, which nasir has no "
        "space for",
        "latency: the TVM per-layer table on the host instead of measurements on the "
        "paper's phones",
        "start network: trained by the run's first trial (pretrain_epochs), not a network "
        "pretrained on ImageNet",
    ),
)

#: in the order of issue 21 (the order the seed systems are usually listed)
PAPER_PRESETS: tuple[Preset, ...] = (NASRL, NASNET, METAQNN, PNAS, ENAS, MNASNET, AMOEBANET,
                                     PROXYLESSNAS, FBNET, DARTS, NETADAPT)
