"""Trials that start from inherited weights: the ``inputs`` a strategy gives a trial.

A strategy may say what its ``k``-th trial starts from besides its assignment
(:meth:`~nasir.strategies.base.Strategy.trial_inputs`); the driver hands it to the worker
as ``task["inputs"]`` and the training estimator reads it here:

- ``inherit``: ``{"weights": PATH, "parent": ASSIGNMENT}`` — start from the state dict at
  ``PATH`` (relative to the run folder, e.g. ``weights/HASH.pt`` that an earlier trial's
  training kept; loaded with ``weights_only=True``), the trained weights of ``parent``, a
  member of the same space at least as wide in every layer. Where the trial's network has
  fewer filters in a layer (a channel group, :mod:`~nasir.backends.torch.pruning`), it
  keeps the parent's filters of largest L2 norm (NetAdapt's rule; the next layers keep
  the matching input channels, batch norms their statistics). No ``parent``: the weights
  fit the trial's network as they are.
- ``train``: :class:`~nasir.backends.torch.estimator.TrainConfig` fields that replace the
  run's for this trial (NetAdapt's short-term fine-tuning: a few epochs of SGD, lr 1e-3).
- ``stage``: a name the trial's metrics carry as ``stage`` (``pretrain``, ``short_term`` …).

>>> import os, tempfile, torch
>>> from nasir.backends.torch.lowering import lower
>>> from nasir.backends.torch.width_space import build
>>> sp = build(base="tiny_mnasnet", start="small", input_shape=(1, 8, 8), num_classes=10)
>>> parent = sp.reference("start")
>>> run = tempfile.mkdtemp(); os.makedirs(f"{run}/weights")
>>> torch.save(lower(sp.instantiate(parent), seed=0).state_dict(), f"{run}/weights/p.pt")
>>> inputs = {"inherit": {"weights": "weights/p.pt", "parent": parent.to_json()},
...           "train": {"epochs": 1}, "stage": "short_term"}
>>> state = start_state(sp, parent.replace(w_12=8), inputs, run)
>>> tuple(state["1.weight"].shape), train_overrides(inputs)
((8, 1, 3, 3), {'epochs': 1})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nasir.errors import NasirError, TrialError
from nasir.space import Space

__all__ = ["start_state", "train_overrides"]

_KEYS = ("inherit", "train", "stage")


def _check(inputs: Mapping[str, Any]) -> None:
    bad = sorted(set(inputs) - set(_KEYS))
    if bad:
        raise NasirError(f"unknown trial input {bad[0]!r}", where="task inputs",
                         hint=f"trial inputs: {', '.join(_KEYS)}")


def train_overrides(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings ``inputs`` replace for this trial (``{}``: the run's)."""
    _check(inputs)
    return dict(inputs.get("train") or {})


def _load(path: str) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrialError("the weights this trial inherits are missing", where=path,
                         hint="the trial that trains them must finish first") from None
    except Exception as e:
        raise TrialError(f"cannot read the weights this trial inherits: {e}",
                         where=path) from None
    if isinstance(state, dict) and isinstance(state.get("state"), dict):
        state = state["state"]  # a search job's checkpoint: {"state": …, "record": …}
    if isinstance(state, dict) and isinstance(state.get("weights"), dict):
        state = state["weights"]
    if not isinstance(state, dict):
        raise TrialError("not a state dict", where=path)
    return state


def start_state(space: Space, assignment: Mapping[str, Any], inputs: Mapping[str, Any],
                run_dir: str | None) -> dict[str, Any] | None:
    """The weights the trial of ``assignment`` starts from (``None``: a fresh start)."""
    from nasir.backends.torch.lowering import prepare
    from nasir.backends.torch.pruning import channel_groups, prune_state, select_filters

    _check(inputs)
    spec = inputs.get("inherit")
    if not spec:
        return None
    path = str(spec["weights"])
    if not os.path.isabs(path):
        if run_dir is None:
            raise TrialError("a trial inherits weights but runs without a run folder",
                             where=path)
        path = os.path.join(run_dir, path)
    state = _load(path)
    if spec.get("parent") is None:
        return state
    parent = prepare(space.instantiate(space.check(spec["parent"], where="inherit.parent")))
    child = prepare(space.instantiate(assignment))
    for c in channel_groups(parent):
        k = child.node(c.sources[0]).shape[0]
        if k > c.width:
            raise TrialError(f"layer {c.name} has {k} filters, more than the {c.width} of "
                             "the network it inherits from", where="inherit.parent")
        if k < c.width:
            state = prune_state(state, c, select_filters(state, c, k))
    return state
