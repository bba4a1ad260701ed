"""One-shot (weight-sharing) performance estimation for experiments: ``--estimator oneshot``.

The survey of Elsken et al. lists weight sharing as the cheapest performance estimator: train
one supernet once, then score every candidate with the weights it inherits from it instead
of training it. :class:`OneShotEstimator` does this the way single-path one-shot (SPOS,
Guo et al. 2020) does:

1. On first use it trains a :class:`~nasir.backends.torch.supernet.Supernet` of the
   experiment's space in ``single`` mode, one uniformly sampled path per step (the shared
   :class:`~nasir.passes.sampling.UniformSampler` pass), with SGD on the digits training
   split. With a run folder the trained weights are written once to ``supernet.pt`` (plus
   ``supernet.json`` with how they were trained) under a file lock, so the pool's worker
   processes and a resumed run reuse them; they load with ``weights_only=True``.
2. Each trial sets the candidate's path, recalibrates BatchNorm statistics on a fixed set of
   training batches (SPOS: shared BN statistics are wrong for any single path), and reports
   validation accuracy in [0, 1]. The result depends only on the assignment, never on the
   order in which trials were scored, so resumed and interrupted runs agree.

Spaces whose decisions change tensor types (channel counts, strided depth choices) have no
single weight-sharing supernet here; the error names those decisions and the option
``fixed`` that pins them (an assignment that contradicts a pinned value then fails as a
trial, with the reason).

>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
>>> est = OneShotEstimator({"epochs": 1, "data_fraction": 0.2, "bn_batches": 1})
>>> m = est.evaluate(sp, sp.reference("resnet"), seed=0)
>>> 0.0 <= m["accuracy"] <= 1.0, m["supernet_epochs"], m["device"]
(True, 1, 'cpu')
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nasir.errors import NasirError, TrialError
from nasir.space import Space

__all__ = ["OneShotConfig", "OneShotEstimator"]


@dataclass(frozen=True)
class OneShotConfig:
    """How the shared supernet is trained and candidates are scored.

    ``epochs`` over the digits training split (a ``data_fraction`` of it), SGD with
    ``lr`` (cosine-annealed), ``momentum`` and ``weight_decay``, ``batch_size``; ``seed``
    fixes the initial weights, the sampled paths and the batch order. ``bn_batches``
    training batches recalibrate BatchNorm per candidate. ``fixed`` pins decisions that
    change tensor types.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    data_fraction: float = 1.0
    bn_batches: int = 4
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1, ">= 1"),
                  ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
                  ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("data_fraction", 0 < self.data_fraction <= 1, "in (0, 1]"),
                  ("bn_batches", self.bn_batches >= 0, ">= 0")]
        for name, ok, want in checks:
            if not ok:
                raise NasirError(f"oneshot estimator option {name} must be {want}, got "
                                 f"{getattr(self, name)!r}",
                                 where=f"estimator.options.{name}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> OneShotConfig:
        """From an experiment's ``estimator.options`` (unknown names are an error)."""
        opts = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(opts) - set(names))
        if bad:
            raise NasirError(f"unknown oneshot estimator option(s): {', '.join(bad)}",
                             where="estimator.options",
                             hint=f"valid options: {', '.join(names)}")
        try:
            return cls(**opts)
        except TypeError as e:
            raise NasirError(f"bad oneshot estimator option: {e}",
                             where="estimator.options") from None

    def digest(self) -> str:
        """A short hash of the training settings (names the stored weights)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class OneShotEstimator:
    """Scores candidates with weights inherited from one trained supernet (see module doc).

    ``options``: :class:`OneShotConfig` fields. ``run_dir``: where the trained supernet is
    kept and shared between processes (``None``: in this object only). ``threads``: torch
    threads for training and scoring. ``data``: a
    :class:`~nasir.backends.torch.data.DataSplits` (``None``: digits). ``device``: where the
    supernet trains and scores (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``; in-memory
    data is held there); the metrics say it (``device``). The kept ``supernet.pt`` holds CPU
    tensors, so workers on other devices load it too.
    """

    name = "oneshot"

    def __init__(self, options: Mapping[str, Any] | None = None, threads: int = 1,
                 run_dir: str | None = None, data: Any = None, device: str = "cpu") -> None:
        from nasir.backends.torch.device import resolve_device

        self.config = OneShotConfig.from_options(options)
        self.device = resolve_device(device)
        self.splits = data
        self.threads = max(1, int(threads))
        self.run_dir = run_dir
        self._net: Any = None
        self._space_key: str | None = None
        self._data: Any = None
        self.info: dict[str, Any] = {}

    # -- the shared supernet ---------------------------------------------------------------
    def _build(self, space: Space) -> Any:
        from nasir.backends.torch.supernet import Supernet

        try:
            return Supernet(space, mode="single", fixed=self.config.fixed or None,
                            seed=self.config.seed).to(self.device)
        except NasirError as e:
            raise NasirError(f"the oneshot estimator cannot build a weight-sharing supernet "
                             f"of space {space.name!r}: {e.message}", where=e.where,
                             hint="pin the decisions that change tensor types with "
                                  "--estimator-opt fixed='{\"LABEL\": VALUE}', or use "
                                  "--estimator training") from None

    def _loaders(self) -> tuple[Any, list[Any], Any]:
        import torch

        from nasir.backends.torch.batches import device_loader
        from nasir.backends.torch.data import digits_splits, subset

        c = self.config
        s = self.splits if self.splits is not None else digits_splits()
        train = subset(s.train, c.data_fraction, c.seed)

        def load(data: Any, batch_size: int, seed: int | None) -> Any:
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            return device_loader(data, batch_size, shuffle=seed is not None, generator=gen,
                                 device=self.device)

        loader = load(train, c.batch_size, c.seed)
        calib = load(train, c.batch_size, c.seed + 1)
        bn = [b for _, b in zip(range(c.bn_batches), calib, strict=False)]
        val = load(s.val, 256, None)
        return loader, bn, val

    def _train(self, space: Space, net: Any, loader: Any, resolution: int | None) -> None:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from nasir.backends.torch.data import resize_batch
        from nasir.passes.sampling import UniformSampler

        c = self.config
        rng = np.random.default_rng(c.seed)
        sampler = UniformSampler(space)
        params = net.weight_parameters()
        opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum,
                              weight_decay=c.weight_decay)
        steps = c.epochs * max(1, len(loader))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        t0 = time.perf_counter()
        losses: list[float] = []
        net.train()
        for _ in range(c.epochs):
            total, n = 0.0, 0
            for x, y in loader:
                a = {**sampler.sample(rng)[0], **c.fixed}
                net.set_path(a)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(resize_batch(x, resolution)), y)
                if not torch.isfinite(loss):
                    raise TrialError("supernet training diverged (non-finite loss)",
                                     hint="lower estimator option lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
            losses.append(total / max(1, n))
        self.info = {"supernet_epochs": c.epochs, "supernet_train_s":
                     round(time.perf_counter() - t0, 3), "supernet_loss": losses,
                     "supernet_device": str(self.device)}

    def _ensure(self, space: Space) -> Any:
        import torch

        blob = json.dumps(space.to_json(), sort_keys=True, default=str)
        key = (f"{space.name}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}:"
               f"{self.config.digest()}")
        if self._net is not None and self._space_key == key:
            return self._net
        torch.set_num_threads(self.threads)
        net = self._build(space)
        loader, bn, val = self._loaders()
        resolution = _resolution(space)
        if self.run_dir is None:
            self._train(space, net, loader, resolution)
        else:
            self._train_shared(space, net, loader, resolution, key)
        self._net, self._space_key, self._data = net, key, (bn, val, resolution)
        return net

    def _train_shared(self, space: Space, net: Any, loader: Any, resolution: int | None,
                      key: str) -> None:
        import torch

        assert self.run_dir is not None
        os.makedirs(self.run_dir, exist_ok=True)
        weights = os.path.join(self.run_dir, "supernet.pt")
        meta = os.path.join(self.run_dir, "supernet.json")
        with open(os.path.join(self.run_dir, "supernet.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains; the others wait, then load
            try:
                stored = _read_meta(meta)
                if stored.get("key") == key and os.path.exists(weights):
                    state = torch.load(weights, map_location="cpu", weights_only=True)
                    net.load_state_dict(state)
                    self.info = {k: stored[k] for k in ("supernet_epochs", "supernet_train_s",
                                                        "supernet_loss", "supernet_device")
                                 if k in stored}
                    return
                self._train(space, net, loader, resolution)
                tmp = f"{weights}.{os.getpid()}.tmp"
                torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
                os.replace(tmp, weights)
                tmp_meta = f"{meta}.{os.getpid()}.tmp"
                with open(tmp_meta, "w") as f:
                    json.dump({"key": key, **self.info,
                               "config": dataclasses.asdict(self.config)}, f, default=str)
                os.replace(tmp_meta, meta)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- scoring ---------------------------------------------------------------------------
    def evaluate(self, space: Space, assignment: Mapping[str, Any], *,
                 seed: int) -> dict[str, Any]:
        """Validation accuracy of ``assignment`` with inherited weights (``seed`` unused:
        the score is a function of the assignment and the shared supernet)."""
        import torch

        from nasir.backends.torch.data import resize_batch

        a = dict(assignment)
        for label, value in self.config.fixed.items():
            if label in a and a[label] != value:
                raise TrialError(f"decision {label}={a[label]!r} differs from the supernet's "
                                 f"pinned value {value!r}", where=label,
                                 hint="constrain the space to the pinned value or use "
                                      "--estimator training")
        space.check(a)
        net = self._ensure(space)
        bn, val, resolution = self._data
        t0 = time.perf_counter()
        with torch.no_grad():
            net.set_path({**a, **self.config.fixed})
            if bn:
                _recalibrate(net, bn, resolution)
            net.eval()
            correct = total = 0
            for x, y in val:
                out = net(resize_batch(x, resolution))
                correct += int((out.argmax(1) == y).sum())
                total += len(y)
        acc = correct / max(1, total)
        return {"accuracy": acc, "oneshot_eval_s": round(time.perf_counter() - t0, 4),
                **self.info, "device": str(self.device)}


def _recalibrate(net: Any, batches: list[Any], resolution: int | None) -> None:
    """Reset every BatchNorm's statistics and re-estimate them (the mean over ``batches``)
    with the current path, as SPOS does before scoring a path."""
    from torch import nn

    from nasir.backends.torch.data import resize_batch

    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        if m.running_mean is not None and m.running_var is not None:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
    net.train()
    for k, (x, _) in enumerate(batches):
        for m in bns:  # momentum 1/(k+1): the running stats are the mean over batches
            m.momentum = 1.0 / (k + 1)
        net(resize_batch(x, resolution))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def _resolution(space: Space) -> int | None:
    """The space's input resolution if it differs from digits' 8×8 (then batches are
    resized like the training estimator does), else ``None``."""
    from nasir.ops import InputOp

    shapes = [n.op.shape for n in space.body.inputs if isinstance(n.op, InputOp)]
    if len(shapes) != 1:
        raise NasirError(f"the oneshot estimator needs a space with one image input, "
                         f"{space.name!r} has {len(shapes)}")
    h = int(shapes[0][-1])
    return None if h == 8 else h


def _read_meta(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
