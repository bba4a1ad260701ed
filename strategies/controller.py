"""An autoregressive LSTM controller over a space's decision schema (torch, CPU).

Zoph & Le (2017): an LSTM emits one decision at a time; step ``k`` reads the embedding of
the option chosen at step ``k−1`` (a start token at step 0) and a per-decision softmax head
gives the distribution over decision ``k``'s domain. ENAS-style logit shaping
(``tanh_constant · tanh(logits / temperature)``) is optional; ``tanh_reduce`` divides the
constant per decision (ENAS micro: ``op_tanh_reduce`` 2.5 on the op decisions,
``micro_controller.py``).

Input decisions whose options are every subset of some candidates that holds the
``required`` ones (``SpaceBuilder.select_any``: NAS-RL anchors, ENAS macro skips; see
:class:`SubsetInput`) are sampled one of two ways (:data:`INPUT_SAMPLINGS`):

* ``"subset_softmax"``: like any decision, one softmax over the options (``2^f`` of them
  for ``f`` free candidates);
* ``"anchor_attention"`` (Zoph & Le §3.3; ENAS's ``general_controller.py``): the decision
  is an *anchor point*. Each free candidate ``j`` is an input independently with
  ``p_j = σ(vᵀ tanh(W_prev·h_j + W_curr·h_i))``, where ``h_i`` is the controller's hidden
  state at this anchor and ``h_j`` the one at candidate ``j``'s anchor; required
  candidates are always on. A sample's log-probability is the sum of the Bernoulli
  log-probabilities, its entropy the sum of their entropies; the next step reads the
  mean of the chosen anchors' states, ``Σ_chosen h_j / (1 + #chosen)`` (ENAS), instead of
  an option embedding. The logit shaping applies to the score inside ``σ``.

Which anchor keys a candidate (the decision schema holds no layer numbers, so it is a
rule over the order of the anchor decisions): the free candidates, in index order, are
the oldest layers; they take the anchors of the most recent earlier anchor decisions,
right-aligned, with the required candidates as the newest layers after them
(``anchor_keys="own"``: every layer keyed by its own anchor, as Zoph & Le write it —
exact for ``nasrl`` and ``enas_macro``, whose required candidate is the predecessor or
the layer itself) or without them (``"next"``: a layer keyed by the anchor of the layer
it feeds, as ENAS's code pairs skip bit ``j`` with anchor ``j``). Layers before the first
anchor decision (the stem, the first layers) have no anchor step: they are keyed by
learned start anchors (ENAS runs an extra LSTM step for layer 0 instead).

When no candidate is required and every Bernoulli comes out 0, the empty set is no
option: the decision is then sampled from the Bernoullis *conditioned* on at least one
input (exact, one uniform per candidate, and the log-probability and entropy are the
conditional ones). The paper spaces never get there: their predecessor is required.

ENAS's skip penalty: :meth:`Controller.scores` also returns, per sequence, the mean over
anchor decisions of ``Σ_j KL(Bernoulli(p_j) ‖ Bernoulli(skip_target))`` (ENAS:
``skip_target`` 0.4, weighted 0.8 in the loss by ``scripts/cifar10_macro_search.sh``;
:meth:`Controller.loss`). ENAS's code samples with ``σ(2s)`` but takes the penalty on
``σ(s)`` (so its skip rate settles near 0.31, not 0.4); here both use the sampling
probability ``p_j``, which the penalty pulls to the target itself, as the paper says.

Randomness: parameters are initialised uniformly in ``[−init, init]`` from a numpy
generator and samples are drawn with a numpy generator, so a strategy stays reproducible
from its own ``rng`` alone.

>>> c = Controller([5, 5, 3], rng=np.random.default_rng(0))
>>> idx, logp, ent = c.sample(np.random.default_rng(1))
>>> len(idx), all(0 <= i < s for i, s in zip(idx, [5, 5, 3]))
(3, True)
>>> lp, _ = c.log_prob([idx])
>>> abs(float(lp[0].detach()) - logp) < 1e-5
True

Anchor attention over two ``select_any``-style decisions (candidate 0 required):

>>> opts = [[(0,), (0, 1)], [(0,), (0, 1), (0, 2), (0, 1, 2)]]
>>> inputs = [SubsetInput.of(o) for o in opts]
>>> c = Controller([4, 2, 4], rng=np.random.default_rng(0), inputs=[None, *inputs])
>>> idx, logp, _ = c.sample(np.random.default_rng(1))
>>> sc = c.scores([idx])
>>> abs(float(sc.log_prob[0].detach()) - logp) < 1e-5, float(sc.skip_kl[0].detach()) > 0
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from nasir.errors import SpecError
from nasir.strategies.controller_inputs import ANCHOR_KEYS, INPUT_SAMPLINGS, SubsetInput
from nasir.strategies.controller_lstm import Controller, Scores

__all__ = ["ANCHOR_KEYS", "ENAS_INPUTS", "INPUT_SAMPLINGS", "Controller", "Scores",
           "SubsetInput", "controller_for", "enas_controller", "single_thread"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after).

    The controller's tensors are tiny: with several threads on a busy machine torch spends
    its time synchronising them (measured 100× slower on 2 loaded cores).
    """
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


def controller_for(decisions: Sequence[tuple[str, Sequence[Any]]], rng: np.random.Generator,
                   *, input_sampling: str = "anchor_attention", anchor_keys: str = "own",
                   skip_target: float = 0.4, skip_weight: float = 0.0,
                   op_tanh_reduce: float = 1.0, **options: Any) -> Controller:
    """A controller over ``(kind, options)`` decisions: with ``input_sampling=
    "anchor_attention"`` the ``input`` decisions with subset options are anchor points,
    the rest softmaxes (``options``: the :class:`Controller`'s other arguments). The
    ``op`` decisions' tanh constant is divided by ``op_tanh_reduce`` (ENAS micro: 2.5).

    >>> c = controller_for([("value", (1, 2)), ("input", [(0,), (0, 1)])],
    ...                    np.random.default_rng(0))
    >>> c.inputs[0] is None, c.inputs[1].free
    (True, (1,))
    """
    if input_sampling not in INPUT_SAMPLINGS:
        raise SpecError(f"unknown input_sampling {input_sampling!r}",
                        hint=f"use one of {', '.join(INPUT_SAMPLINGS)}")
    inputs = [SubsetInput.of(opts) if kind == "input" and input_sampling == "anchor_attention"
              else None for kind, opts in decisions]
    return Controller([len(opts) for _, opts in decisions], rng, inputs=inputs,
                      anchor_keys=anchor_keys, skip_target=skip_target,
                      skip_weight=skip_weight, tanh_reduce=[
                          op_tanh_reduce if kind == "op" else 1.0 for kind, _ in decisions],
                      **options)


#: ENAS's input decisions (melodyguan/enas ``general_controller.py`` with the settings of
#: ``scripts/cifar10_macro_search.sh``: ``--controller_skip_target=0.4``,
#: ``--controller_skip_weight=0.8``). Its code keys skip bit ``j`` by anchor ``j`` and
#: samples the bit from a two-way softmax over ``[−s, s]`` (``s`` the shaped score), that
#: is ``p = σ(2s)``: with ``tanh_constant`` 1.5, ``p`` lies in ``σ(±3)``, not ``σ(±1.5)``.
ENAS_INPUTS: dict[str, Any] = {"input_sampling": "anchor_attention", "anchor_keys": "next",
                               "skip_target": 0.4, "skip_weight": 0.8,
                               "skip_logit_scale": 2.0}


def enas_controller(space: Any, options: Mapping[str, Sequence[Any]],
                    rng: np.random.Generator, **settings: Any) -> Controller:
    """ENAS's controller over the free decisions ``options`` (label → options, e.g. a
    supernet's ``decisions()``) of ``space``: :data:`ENAS_INPUTS` unless ``settings``
    override them (``settings`` also takes the :class:`Controller`'s other arguments).

    >>> from nasir.spaces import get_space
    >>> sp = get_space("enas_macro", input_shape=(1, 8, 8), layers=3)
    >>> c = enas_controller(sp, {d.label: d.options for d in sp.decisions},
    ...                     np.random.default_rng(0), tanh_constant=1.5)
    >>> c.skip_weight, c.skip_target, c.anchor_keys, sum(s is not None for s in c.inputs)
    (0.8, 0.4, 'next', 2)
    """
    kinds = {d.label: d.kind for d in space.decisions}
    return controller_for([(kinds.get(lb, "value"), opts) for lb, opts in options.items()],
                          rng, **{**ENAS_INPUTS, **settings})
