"""GPU checks of issue 18 for a machine with a CUDA GPU: search, OOM path, data speed, tests.

What a CPU-only machine cannot show, in one short run (a few minutes on one GPU):

1. ``search``: a short ``nasir search --device cuda --workers 2`` (training estimator on
   digits, NAS-Bench-201 cells) — trial counts, the ``device`` / ``amp`` each trial's metrics
   report and the worker names (``…:gpuI`` when the pool gave workers their GPU);
2. ``oom``: a deliberately huge candidate. With the free-memory check it is ``infeasible``
   and never runs; with the check turned off it runs, CUDA runs out of memory, the trial
   fails with that reason, the allocator's memory comes back, and a small candidate then
   trains on the same device;
3. ``data``: training images/s of the estimator on a CIFAR-sized in-memory set, the set held
   and batched on the GPU against the same set through a ``DataLoader``, bf16 autocast
   against fp32;
4. ``tests``: ``pytest -m gpu`` over the GPU tests of the torch backend and the runtime.

    .venv/bin/python benchmarks/gpu_checks.py [--device cuda] [--skip-tests] [--quick]

``--device cpu --quick`` runs the same code on the CPU (a smoke test of the script). The last
line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nasir.backends.torch.data import DataSplits
from nasir.backends.torch.datasets.tensors import ImageTensors
from nasir.backends.torch.device import free_memory, resolve_device
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.backends.torch.memory import predict_training_memory
from nasir.backends.torch.transforms import set_resolution
from nasir.spaces import get_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment(device: torch.device) -> dict[str, Any]:
    """torch, CUDA and the GPU this run uses."""
    out: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                           "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count(),
                   bf16=torch.cuda.is_bf16_supported(),
                   free_bytes=free_memory(device),
                   total_bytes=torch.cuda.get_device_properties(device).total_memory)
    return out


def search(device: str, quick: bool) -> dict[str, Any]:
    """A short search through the CLI on ``device`` with two pool workers."""
    from nasir.runtime.store import RunStore

    run = os.path.join(tempfile.mkdtemp(prefix="nasir-gpu-"), "run")
    trials = 4 if quick else 8
    cmd = [sys.executable, "-m", "nasir", "search", "--space", "nb201",
           "--space-opt", "channels=8", "--space-opt", "cells_per_stage=1",
           "--strategy", "random", "--estimator", "training",
           "--estimator-opt", f"epochs={1 if quick else 3}", "--latency", "off",
           "--reward", "accuracy", "--objective", "accuracy:max", "--trials", str(trials),
           "--workers", "2", "--device", device, "--no-progress", "--no-report",
           "--run-dir", run]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out: dict[str, Any] = {"command": " ".join(cmd[1:]), "rc": p.returncode,
                           "wall_s": round(time.perf_counter() - t0, 1)}
    if p.returncode != 0:
        out["stderr_tail"] = p.stderr[-2000:]
        return out
    st = RunStore.open(run)
    try:
        rows = st.trials()
    finally:
        st.close()
    out["counts"] = {s: sum(1 for t in rows if t["status"] == s)
                     for s in sorted({t["status"] for t in rows})}
    out["trials"] = [{"id": t["id"], "status": t["status"], "worker": t["worker"],
                      "device": (t["metrics"] or {}).get("device"),
                      "amp": (t["metrics"] or {}).get("amp"),
                      "accuracy": (t["metrics"] or {}).get("accuracy"),
                      "train_s": (t["metrics"] or {}).get("train_s"),
                      "error": t["error"]} for t in rows]
    return out


def _huge(device: torch.device, free: int) -> tuple[Any, int, int]:
    """An NB201 graph and a batch size whose predicted training memory is about twice
    ``free``."""
    sp = get_space("nb201", input_shape=(3, 64, 64), channels=64, cells_per_stage=2)
    g = sp.instantiate(sp.reference("best_cifar10"))
    target = 2 * free
    batch = 64
    while predict_training_memory(g, batch, "adam").total < target and batch < 1 << 20:
        batch *= 2
    return g, batch, predict_training_memory(g, batch, "adam").total


def oom(device: torch.device) -> dict[str, Any]:
    """The huge candidate with and without the free-memory check, then a small one."""
    free = free_memory(device)
    pretend = free is None  # the CPU: show the check with a stated free memory, run nothing
    if pretend:
        free = 1 << 30
    g, batch, predicted = _huge(device, free)
    images = np.random.default_rng(0).integers(0, 256, (2 * batch, 3, 64, 64), np.uint8)
    labels = np.arange(2 * batch) % 10
    data = DataSplits(ImageTensors(images, labels), ImageTensors(images[:256], labels[:256]),
                      None, 10, (3, 64, 64))
    cfg = TrainConfig(epochs=1, batch_size=batch, device=str(device), amp="off")
    out: dict[str, Any] = {"batch_size": batch, "predicted_bytes": predicted,
                           "free_bytes": free, "free_stated": pretend}
    checked = TrainingEstimator(cfg, data=data, free_memory=(lambda d: free) if pretend
                                else None).estimate(g)
    out["checked"] = {"ok": checked.ok, "reason": checked.reason}
    if pretend:
        out["unchecked"] = "skipped: the CPU has no device memory to run out of"
        return out
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    t0 = time.perf_counter()
    unchecked = TrainingEstimator(cfg, data=data, free_memory=lambda d: None).estimate(g)
    out["unchecked"] = {"ok": unchecked.ok, "reason": (unchecked.reason or "")[:300],
                        "s": round(time.perf_counter() - t0, 2)}
    del data, images
    if device.type == "cuda":
        out["allocated_before"] = before
        out["allocated_after"] = torch.cuda.memory_allocated(device)
        out["reserved_after"] = torch.cuda.memory_reserved(device)
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=8, cells_per_stage=1)
    small = TrainingEstimator(TrainConfig(epochs=1, device=str(device))).estimate(
        sp.instantiate(sp.reference("resnet")))
    out["next_candidate"] = {"ok": small.ok, "reason": small.reason, "device": small.device}
    return out


class _Plain(Dataset):
    """The same images behind ``__getitem__`` only: what a DataLoader has to collate."""

    def __init__(self, data: ImageTensors) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[i]


def data_speed(device: torch.device, quick: bool) -> dict[str, Any]:
    """Training images/s: held on the device vs a DataLoader; bf16 vs fp32."""
    n = 1000 if quick else 20000
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), np.uint8)
    labels = rng.integers(0, 10, n)
    held = ImageTensors(images, labels, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    val = ImageTensors(images[:1000], labels[:1000], mean=(0.5,) * 3, std=(0.25,) * 3)
    sp = get_space("nb201", input_shape=(3, 32, 32), channels=16, cells_per_stage=1)
    g = set_resolution(sp.instantiate(sp.reference("resnet")), 32)
    out: dict[str, Any] = {"images": n}
    cases = [("warm_up", held, "auto"), ("held", held, "auto"),
             ("dataloader", _Plain(held), "auto"), ("held_fp32", held, "off")]
    for name, train, amp in cases:
        data = DataSplits(train, val, None, 10, (3, 32, 32))
        cfg = TrainConfig(epochs=2, batch_size=256, device=str(device), amp=amp,
                          optimizer="sgd", lr=0.05,
                          data_fraction=0.1 if name == "warm_up" else 1.0)
        r = TrainingEstimator(cfg, data=data).estimate(g)
        if name != "warm_up":
            out[name] = {"ok": r.ok, "reason": r.reason, "amp": r.amp,
                         "images_per_s": round(2 * n / r.train_time_s, 1) if r.ok else None}
    if out["held"]["images_per_s"] and out["dataloader"]["images_per_s"]:
        out["held_vs_dataloader_speedup"] = round(
            out["held"]["images_per_s"] / out["dataloader"]["images_per_s"], 2)
    return out


def tests() -> dict[str, Any]:
    """``pytest -m gpu`` over the GPU tests."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           "tests/test_torch_device.py", "tests/test_runtime_devices.py"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return {"rc": p.returncode, "tail": p.stdout[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    report: dict[str, Any] = {"environment": environment(device)}
    for name, fn in (("search", lambda: search(args.device, args.quick)),
                     ("oom", lambda: oom(device)),
                     ("data", lambda: data_speed(device, args.quick))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # one failing check must not hide the others
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["check_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report[name], default=str)[:400], file=sys.stderr)
    if not args.skip_tests:
        report["tests"] = tests()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
