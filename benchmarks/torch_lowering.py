"""Forward+backward time of a lowered network next to torchvision's own model.

MobileNetV2 and MnasNet-B1 (nasir's built-in spaces, lowered to torch.fx GraphModules)
against torchvision's ``mobilenet_v2`` and ``mnasnet1_0``, both with the same weights,
measured interleaved in one process (median of repeats, after warm-up). torchvision is a dev
dependency (``pip install -e '.[dev]'``).

    .venv/bin/python benchmarks/torch_lowering.py [--batch 32] [--res 64] [--repeats 15]

Last line: ``{"lowered_vs_torchvision_time_ratio": …}`` (lowered / torchvision; 1.0 = same).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from nasir.backends.torch import load_weights, lower
from nasir.backends.torch.torchvision_import import import_torchvision
from nasir.spaces import get_space


def _step(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    t = time.perf_counter()
    m.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    return time.perf_counter() - t


def _pair(name: str, res: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    models = import_torchvision().models
    if name == "mobilenet_v2":
        g = get_space("mobilenet_v2", input_shape=(3, res, res), num_classes=10).instantiate({})
        hw: torch.nn.Module = models.mobilenet_v2(num_classes=10)
    else:
        sp = get_space("mnasnet", input_shape=(3, res, res), num_classes=10)
        g = sp.instantiate(sp.reference("mnasnet_b1"))
        hw = models.mnasnet1_0(num_classes=10)
    low = lower(g, seed=0)
    theirs = [v for k, v in hw.state_dict().items() if not k.endswith("num_batches_tracked")]
    load_weights(low, dict(zip(low.state_dict(), theirs)))
    return low, hw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", default="mobilenet_v2,mnasnet_b1")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.res, args.res)
    y = torch.randint(0, 10, (args.batch,))
    ratios = []
    print(f"batch {args.batch}, {args.res}x{args.res}, {args.threads} threads, "
          f"median of {args.repeats} forward+backward steps, interleaved")
    for name in args.nets.split(","):
        low, hw = _pair(name, args.res)
        for _ in range(3):
            _step(low, x, y)
            _step(hw, x, y)
        tl, th = [], []
        for i in range(args.repeats):
            # alternate which goes first so drifts in machine load hit both alike
            if i % 2:
                tl.append(_step(low, x, y))
                th.append(_step(hw, x, y))
            else:
                th.append(_step(hw, x, y))
                tl.append(_step(low, x, y))
        ml, mh = statistics.median(tl), statistics.median(th)
        ratios.append(ml / mh)
        print(f"{name:14s} lowered {ml * 1e3:8.1f} ms   torchvision {mh * 1e3:8.1f} ms   "
              f"ratio {ml / mh:.3f}")
    ratio = statistics.median(ratios) if len(ratios) > 1 else ratios[0]
    print(json.dumps({"lowered_vs_torchvision_time_ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
