"""Training speed of nasir's lowered networks and training estimator against hand-written
PyTorch, each measured beside its baseline in the same run (issue 18).

1. ``lowered_vs_torchvision_step_ratio``: one training step (zero grads, forward,
   cross-entropy, backward, SGD step) of nasir's lowered MobileNetV2 over the same step of
   torchvision's ``mobilenet_v2`` holding the same weights: same device, precision, memory
   format and batch; the two alternate (which goes first alternates too) and the ratio is of
   the medians. Goal ≤ 1.05.
2. ``estimator_vs_plain_loop_epoch_ratio``: an epoch of
   :class:`~nasir.backends.torch.estimator.TrainingEstimator` (training over the shuffled
   training set, then validation accuracy) over the same epoch written as a plain loop by
   hand: the same lowered network and initial weights, SGD with Nesterov momentum, batch
   size, data held as tensors on the device, loss summed on the device. The estimator's
   time is its whole ``estimate`` call (its checks before training included), the loop's
   from moving the data to the device to the end of the last epoch; per epoch, runs
   alternating, medians. Goal ≤ 1.10.

The data of (2) is a CIFAR-sized set made in memory (10 classes of 3×32×32 images: a smooth
random pattern per class plus noise) and the network NAS-Bench-201's ResNet cell
(``nb201`` space, 16 channels, one cell per stage).

On CUDA: 224×224, batch 64, bf16 autocast, channels-last, wall-clock times. On the CPU:
fp32, contiguous, MobileNetV2 at a reduced resolution (64×64, batch 16 by default) so that
the run takes a minute or two, one thread and the process's CPU time (on a machine whose
cores other jobs share, wall-clock times of a few seconds vary by ±30 % and more, and
several threads on oversubscribed cores by far more; the CPU time a run consumes does not;
``--clock wall`` to use wall-clock time). Both sides run in this process: nothing is
left out of the CPU time (the estimator holds in-memory data without loader workers).

    .venv/bin/python benchmarks/training_speed.py [--device auto] [--res R] [--batch B]
        [--steps 20] [--repeats 4] [--threads 1] [--clock cpu|wall]

Last line: JSON with both ratios, ``device``, ``images_per_s`` and the settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nasir.backends.torch import DataSplits, TrainConfig, TrainingEstimator, load_weights, lower
from nasir.backends.torch.torchvision_import import import_torchvision
from nasir.graph import Graph
from nasir.spaces import get_space


class _Setting:
    """Device, autocast dtype (None: fp32) and memory format shared by both sides."""

    def __init__(self, device: torch.device, clock: str = "wall") -> None:
        self.device = device
        self.cpu_clock = clock == "cpu"
        cuda = device.type == "cuda"
        self.dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
        self.channels_last = cuda

    @property
    def amp(self) -> str:
        return "off" if self.dtype is None else "bf16"

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, m: nn.Module) -> nn.Module:
        m = m.to(self.device)
        return m.to(memory_format=torch.channels_last) if self.channels_last else m

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def now(self) -> float:
        """Seconds on this run's clock (after the device's queued work is done)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu_clock else time.perf_counter()


# -- 1. a training step: lowered MobileNetV2 vs torchvision's ---------------------------------
def _mobilenet_pair(res: int, st: _Setting) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    theirs = import_torchvision().models.mobilenet_v2()
    ours = lower(get_space("mobilenet_v2", input_shape=(3, res, res)).instantiate({}), seed=0)
    src = [v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")]
    load_weights(ours, dict(zip(ours.state_dict(), src)))
    return st.prepare(ours), st.prepare(theirs)


def _step_timer(m: nn.Module, x: torch.Tensor, y: torch.Tensor,
                st: _Setting) -> Callable[[], float]:
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    m.train()

    def step() -> float:
        t = st.now()
        opt.zero_grad(set_to_none=True)
        with st.autocast():
            loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return st.now() - t

    return step


def step_ratio(st: _Setting, res: int, batch: int, steps: int) -> dict[str, float]:
    """Median step times of both networks (alternating) and their ratio."""
    ours, theirs = _mobilenet_pair(res, st)
    gen = torch.Generator().manual_seed(0)
    x = st.batch(torch.randn(batch, 3, res, res, generator=gen))
    y = torch.randint(0, 1000, (batch,), generator=gen).to(st.device)
    a, b = _step_timer(ours, x, y, st), _step_timer(theirs, x, y, st)
    for _ in range(3):
        a()
        b()
    ta, tb = [], []
    for i in range(steps):
        # alternate which goes first so drifts in machine load hit both alike
        if i % 2:
            ta.append(a())
            tb.append(b())
        else:
            tb.append(b())
            ta.append(a())
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {"lowered_s": ma, "torchvision_s": mb, "ratio": ma / mb,
            "lowered_images_per_s": batch / ma, "torchvision_images_per_s": batch / mb}


# -- 2. an epoch: the training estimator vs a plain loop --------------------------------------
def cifar_like(n_train: int, n_val: int, seed: int = 0) -> DataSplits:
    """A learnable CIFAR-sized set in memory: a smooth pattern per class plus noise."""
    gen = torch.Generator().manual_seed(seed)
    protos = F.interpolate(torch.randn(10, 3, 8, 8, generator=gen), size=(32, 32),
                           mode="bilinear", align_corners=False)

    def split(n: int) -> TensorDataset:
        y = torch.randint(0, 10, (n,), generator=gen)
        x = protos[y] + 0.8 * torch.randn(n, 3, 32, 32, generator=gen)
        return TensorDataset(x.contiguous(), y)

    return DataSplits(split(n_train), split(n_val), None, 10, (3, 32, 32), name="cifar-like")


def _nb201_resnet() -> Graph:
    sp = get_space("nb201", input_shape=(3, 32, 32), channels=16, cells_per_stage=1)
    return sp.instantiate(sp.reference("resnet"))


def plain_loop(g: Graph, data: DataSplits, st: _Setting, epochs: int, batch: int,
               lr: float) -> tuple[float, float]:
    """Train ``g`` by hand; returns (seconds from moving the data to the device to the end
    of the last epoch, last validation accuracy)."""
    t0 = st.now()
    xs, ys = (t.to(st.device) for t in data.train.tensors)
    xv, yv = (t.to(st.device) for t in data.val.tensors)
    order_gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = st.prepare(lower(g, seed=0))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    acc = 0.0
    for _ in range(epochs):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=st.device)
        order = torch.randperm(len(ys), generator=order_gen).to(st.device)
        for i in range(0, len(ys), batch):
            idx = order[i:i + batch]
            x, y = st.batch(xs[idx]), ys[idx]
            opt.zero_grad(set_to_none=True)
            with st.autocast():
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += loss.detach() * len(y)
        if not torch.isfinite(total):
            raise RuntimeError("the plain loop diverged")
        model.eval()
        right = torch.zeros((), dtype=torch.int64, device=st.device)
        with torch.no_grad():
            for i in range(0, len(yv), 256):
                with st.autocast():
                    out = model(st.batch(xv[i:i + 256]))
                right += (out.argmax(1) == yv[i:i + 256]).sum()
        acc = int(right) / len(yv)
    return st.now() - t0, acc


def estimator_run(g: Graph, data: DataSplits, st: _Setting, epochs: int, batch: int,
                  lr: float) -> tuple[float, float]:
    """The estimator on the same work; returns (seconds of the whole ``estimate`` call,
    last validation accuracy)."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch, optimizer="sgd", lr=lr, momentum=0.9,
                      seed=0, device=str(st.device), amp=st.amp,
                      channels_last=st.channels_last)
    est = TrainingEstimator(cfg, data=data)
    t0 = st.now()
    r = est.estimate(g)
    took = st.now() - t0
    if not r.ok:
        raise RuntimeError(f"the estimator failed: {r.reason}")
    if r.amp != st.amp:
        raise RuntimeError(f"the estimator ran {r.amp}, the plain loop {st.amp}")
    return took, r.val_accuracy


def epoch_ratio(st: _Setting, n_train: int, epochs: int, batch: int,
                repeats: int) -> dict[str, float]:
    """Median per-epoch times of the estimator and the plain loop (alternating)."""
    data, g, lr = cifar_like(n_train, max(256, n_train // 4)), _nb201_resnet(), 0.05
    plain_loop(g, data, st, 1, batch, lr)  # warm-up (allocator, kernels)
    est_t, plain_t = [], []
    accs: tuple[float, float] = (0.0, 0.0)
    for i in range(repeats):
        runs = [0, 1] if i % 2 else [1, 0]
        for which in runs:
            if which == 0:
                t, a = estimator_run(g, data, st, epochs, batch, lr)
                est_t.append(t / epochs)
                accs = (a, accs[1])
            else:
                t, a = plain_loop(g, data, st, epochs, batch, lr)
                plain_t.append(t / epochs)
                accs = (accs[0], a)
    me, mp = statistics.median(est_t), statistics.median(plain_t)
    return {"estimator_epoch_s": me, "plain_epoch_s": mp, "ratio": me / mp,
            "estimator_images_per_s": n_train / me, "plain_images_per_s": n_train / mp,
            "estimator_val_acc": accs[0], "plain_val_acc": accs[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    ap.add_argument("--res", type=int, default=None, help="MobileNetV2 resolution "
                    "(default 224 on CUDA, 64 on the CPU)")
    ap.add_argument("--batch", type=int, default=None, help="MobileNetV2 batch "
                    "(default 64 on CUDA, 16 on the CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per network "
                    "(default 50 on CUDA, 20 on the CPU)")
    ap.add_argument("--train", type=int, default=None, help="training images of the epoch "
                    "benchmark (default 20,480 on CUDA, 1,536 on the CPU)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default 1 on the CPU, torch's own on CUDA)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None,
                    help="process CPU time or wall-clock time (default: cpu on the CPU, "
                    "wall on CUDA)")
    args = ap.parse_args()
    spec = args.device
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    cuda = device.type == "cuda"
    st = _Setting(device, args.clock or ("wall" if cuda else "cpu"))
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    res = args.res or (224 if cuda else 64)
    batch = args.batch or (64 if cuda else 16)
    steps = args.steps or (50 if cuda else 20)
    n_train = args.train or (20_480 if cuda else 1_536)
    clock = "process CPU time" if st.cpu_clock else "wall-clock time"
    print(f"device {st.device}, precision {st.amp}, channels_last {st.channels_last}, "
          f"{torch.get_num_threads()} CPU threads, {clock}")
    a = step_ratio(st, res, batch, steps)
    print(f"MobileNetV2 training step, batch {batch}, {res}x{res}, median of {steps}: "
          f"lowered {a['lowered_s'] * 1e3:.1f} ms, torchvision {a['torchvision_s'] * 1e3:.1f} ms,"
          f" ratio {a['ratio']:.3f}")
    b = epoch_ratio(st, n_train, args.epochs, 64, args.repeats)
    print(f"NB201 ResNet epoch, {n_train} CIFAR-sized images, batch 64, median of "
          f"{args.repeats} x {args.epochs} epochs: estimator {b['estimator_epoch_s']:.2f} s, "
          f"plain loop {b['plain_epoch_s']:.2f} s, ratio {b['ratio']:.3f} (val acc "
          f"{b['estimator_val_acc']:.3f} / {b['plain_val_acc']:.3f})")
    print(json.dumps({
        "lowered_vs_torchvision_step_ratio": round(a["ratio"], 4),
        "estimator_vs_plain_loop_epoch_ratio": round(b["ratio"], 4),
        "device": str(st.device),
        "images_per_s": {
            "lowered_mobilenet_v2": round(a["lowered_images_per_s"], 1),
            "torchvision_mobilenet_v2": round(a["torchvision_images_per_s"], 1),
            "estimator": round(b["estimator_images_per_s"], 1),
            "plain_loop": round(b["plain_images_per_s"], 1)},
        "settings": {"precision": st.amp, "channels_last": st.channels_last,
                     "threads": torch.get_num_threads(),
                     "clock": "cpu" if st.cpu_clock else "wall",
                     "mobilenet_v2": f"{res}x{res} batch {batch}", "epoch": f"{n_train} "
                     f"3x32x32 images, batch 64, nb201 resnet c16"}}))


if __name__ == "__main__":
    main()
