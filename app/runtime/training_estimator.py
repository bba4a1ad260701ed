"""The runtime's training estimator (an adapter over the torch backend's), the weights it
keeps for ``nasir export`` and the run's data loaded once per process
(:mod:`~nasir.runtime.estimators` re-exports them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nasir.errors import InfeasibleTrial, NasirError, TrialError
from nasir.space import Space

__all__ = ["TrainingEstimator", "load_run_data", "save_weights"]


class TrainingEstimator:
    """Adapter over the torch backend's :class:`~nasir.backends.torch.estimator.TrainingEstimator`
    (digits by default); ``options`` are its ``TrainConfig`` fields (``epochs``, ``lr``,
    ``data_fraction``, ``batch_size`` …; ``early_stopping`` as a dict of
    ``LearningCurveStopper`` fields).

    The trial seed becomes the training seed, so a trial is reproducible. Accuracy is the
    validation accuracy in [0, 1]; ``device`` and ``amp`` say where and in which precision
    it trained. ``device``: the run's device (an explicit ``device`` option wins). With
    ``weights_dir`` the trained state dict is kept as ``weights_dir/HASH.pt`` for
    ``nasir export`` (workers write files, never the store). A candidate whose predicted
    training memory is above the device's free memory raises :class:`InfeasibleTrial`.
    """

    name = "training"

    def __init__(self, options: Mapping[str, Any] | None = None, threads: int = 1,
                 weights_dir: str | None = None, data: Any = None,
                 device: str | None = None) -> None:
        import torch

        from nasir.backends.torch.estimator import LearningCurveStopper, TrainConfig
        from nasir.backends.torch.estimator import TrainingEstimator as _Impl

        opts = dict(options or {})
        if device is not None:
            opts.setdefault("device", device)
        if isinstance(opts.get("early_stopping"), Mapping):
            opts["early_stopping"] = LearningCurveStopper(**opts["early_stopping"])
        try:
            config = TrainConfig(**opts)
        except TypeError as e:
            import dataclasses

            fields = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
            raise NasirError(f"bad training estimator option: {e}", where="--estimator-opt",
                             hint=f"valid options: {fields}") from None

        class _Keeping(_Impl):
            """Keeps the last trained module so its weights can be saved."""

            last: Any = None

            def _build(self, g):
                self.last = super()._build(g)
                return self.last

        torch.set_num_threads(max(1, int(threads)))
        self.impl = _Keeping(config, data=data)
        self.weights_dir = weights_dir
        self.config = config
        self.inputs: dict[str, Any] = {}

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Take the trial's ``inputs`` (:mod:`nasir.runtime.inherit`: weights to start
        from, training overrides) from the worker's task."""
        self.inputs = dict(task.get("inputs") or {})

    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """Train with ``seed``; accuracy, final loss, curves and training time."""
        import dataclasses

        from nasir.runtime.inherit import start_state, train_overrides

        run_dir = os.path.dirname(self.weights_dir) if self.weights_dir else None
        init = start_state(space, assignment, self.inputs, run_dir)
        self.impl.config = dataclasses.replace(self.config, **train_overrides(self.inputs),
                                               seed=int(seed))
        self.impl.last = None
        g = space.instantiate(assignment)
        r = self.impl.estimate(g, init=init)
        if not r.ok:
            self.impl.last = None  # a failed trial's model must not hold the GPU's memory
            if r.infeasible:
                raise InfeasibleTrial(f"training not run: {r.reason}", where=r.device)
            raise TrialError(f"training failed: {r.reason}")
        if self.weights_dir and self.impl.last is not None:
            save_weights(space, assignment, self.impl.last, self.weights_dir)
        out = {"accuracy": float(r.val_accuracy), "loss": r.loss_curve[-1] if r.loss_curve
               else None, "val_curve": list(r.val_curve), "train_s": float(r.train_time_s),
               "epochs_run": int(r.epochs_run), "device": r.device, "amp": r.amp}
        if r.test_accuracy is not None:
            out["test_accuracy"] = float(r.test_accuracy)
        if "stage" in self.inputs:
            out["stage"] = str(self.inputs["stage"])
        return out


def save_weights(space: Space, assignment: Mapping[str, Any], module: Any,
                 weights_dir: str) -> str:
    """Keep a trained module's state dict as ``weights_dir/HASH.pt`` (for ``nasir export``;
    written atomically, CPU tensors). Returns the path."""
    import torch

    from nasir.passes.hashing import assignment_hash

    net = getattr(module, "net", module)  # unwrap an auxiliary-head wrapper
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    os.makedirs(weights_dir, exist_ok=True)
    path = os.path.join(weights_dir, f"{assignment_hash(space, assignment)}.pt")
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(sd, tmp)
    os.replace(tmp, path)
    return path


_DATA: dict[str, Any] = {}


def load_run_data(exp: Any) -> Any:
    """The :class:`~nasir.backends.torch.data.DataSplits` an experiment's trials use (``None``
    when they use none), loaded once per process."""
    import json

    name = exp.data_name
    if name is None:
        return None
    key = json.dumps([name, exp.data.options], sort_keys=True, default=str)
    if key not in _DATA:
        from nasir.backends.torch.datasets import load_data

        _DATA.clear()
        _DATA[key] = load_data(name, exp.data.options)
    return _DATA[key]
