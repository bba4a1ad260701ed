"""Peak memory of one supernet training step per mode, next to the single child.

NAS-Bench-201 skeleton (C=16, 32×32 input, ``--cells`` cells per stage), batch ``--batch``,
plain SGD. For each mode the weight-training step (forward, backward, update; architecture
logits frozen as in ProxylessNAS' weight step) is measured, plus the binarized
architecture step (logits trained through the straight-through gate). The DARTS mode is
also measured on spaces with 1…5 candidate ops per edge to show its growth.

Measured = resident weights and buffers + the peak of the CPU allocator's bytes during
the step, summed from the PyTorch profiler's allocation/free events
(``nasir.backends.torch.memory.measure_training_step``). Predicted = the IR-based model of
``nasir.backends.torch.memory`` (``Supernet.predict_memory``), computed before the run.

    .venv/bin/python benchmarks/supernet_memory.py [--batch 32] [--cells 1]

Last line: ``{"binarized_vs_child_memory_ratio": …, "darts_vs_child_memory_ratio": …}``.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from nasir.backends.torch.memory import measure_training_step, predict_training_memory
from nasir.backends.torch.supernet import Supernet
from nasir.dsl import SpaceBuilder
from nasir.ops import (
    AddOp,
    BatchNormOp,
    Conv2dOp,
    FlattenOp,
    GlobalAvgPoolOp,
    LinearOp,
    ReLUOp,
    ResBlockOp,
)
from nasir.space import Space
from nasir.spaces import get_space
from nasir.spaces.nb201 import OPS, _edge_branches

MIB = 1 << 20


def nb201_subspace(ops: tuple[str, ...], cells: int, channels: int = 16,
                   res: int = 32) -> Space:
    """NB201's skeleton with only ``ops`` as edge candidates."""
    s = SpaceBuilder(f"nb201_{len(ops)}ops", (3, res, res))

    def cell(x, c):
        nodes = [x]
        for i in (1, 2, 3):
            br = {k: v for k, v in _edge_branches(c).items() if k in ops}
            terms = [s.choose(f"edge_{j}_{i}", br, nodes[j]) for j in range(i)]
            nodes.append(terms[0] if len(terms) == 1 else s.op(AddOp(), *terms))
        return nodes[3]

    x = s.op(BatchNormOp(), s.op(Conv2dOp(out_channels=channels, kernel=3), s.input))
    c = channels
    for stage in range(3):
        if stage:
            c *= 2
            x = s.op(ResBlockOp(out_channels=c, stride=2), x)
        for _ in range(cells):
            x = cell(x, c)
    x = s.op(ReLUOp(), s.op(BatchNormOp(), x))
    x = s.op(LinearOp(out_features=10), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
    return s.build(x)


def measure(module: torch.nn.Module, params: list, x: torch.Tensor, y: torch.Tensor) -> int:
    opt = torch.optim.SGD(params, lr=0.01)

    def step() -> None:
        F.cross_entropy(module(x), y).backward()
        opt.step()

    torch.manual_seed(0)
    step()  # warm-up: lazy allocations, oneDNN primitives
    # drop the gradients before the measured step: the profiler cannot see frees of
    # blocks allocated before it started, so they must not happen inside it
    opt.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    return measure_training_step(module, step).total


def _peak(net: Supernet, arch: dict, value: float) -> None:
    with torch.no_grad():
        for label, opts in net.decisions().items():
            a = net.alphas[label.replace(".", "__")]
            a.zero_()
            a[opts.index(arch[label])] = value


def _short(net: Supernet) -> str:
    return "".join(str(OPS.index(v)) for v in net.last_path.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b = args.batch
    sp = nb201_subspace(OPS, args.cells)
    arch = dict(get_space("nb201").reference("best_cifar10"))
    x = torch.randn(b, 3, 32, 32)
    y = torch.randint(0, 10, (b,))
    net = Supernet(sp, mode="single", seed=0)
    for p in net.arch_parameters():
        p.requires_grad_(False)
    child = net.child(arch)
    rows = []
    pc = predict_training_memory(net.child_graph(arch), b).total
    mc = measure(child, list(child.parameters()), x, y)
    rows.append(("child (best_cifar10)", pc, mc))
    results = {}
    for mode in ("single", "binarized", "gumbel", "darts"):
        net.set_mode(mode)
        net.set_path(arch)
        pred = net.predict_memory(b, mode=mode, assignment=arch).total
        if mode == "binarized":
            # logits peaked on the child's architecture: the sampled path is the child's,
            # so the comparison is like for like (the sampling itself is real)
            _peak(net, arch, 30.0)
            meas = measure(net, net.weight_parameters(), x, y)
            assert net.last_path == {k: v for k, v in arch.items() if k in net.last_path}
            rows.append(("supernet binarized (weight step, child's path)", pred, meas))
            _peak(net, arch, 0.0)
            torch.manual_seed(1)
            meas_u = measure(net, net.weight_parameters(), x, y)
            rows.append((f"supernet binarized (uniform logits, path {_short(net)})", None,
                         meas_u))
        else:
            meas = measure(net, net.weight_parameters(), x, y)
            rows.append((f"supernet {mode}", pred, meas))
        results[mode] = meas
    for p in net.arch_parameters():
        p.requires_grad_(True)
    net.set_mode("binarized")
    _peak(net, arch, 30.0)
    meas_arch = measure(net, net.parameters(), x, y)
    rows.append(("supernet binarized (arch step, gate on)", None, meas_arch))
    print(f"NB201 skeleton, C=16, 32x32, {args.cells} cells/stage, batch {b}, SGD; MiB")
    print(f"{'what':50s} {'predicted':>10s} {'measured':>10s} {'pred/meas':>10s} "
          f"{'vs child':>9s}")
    for what, pred, meas in rows:
        ps = f"{pred / MIB:10.1f}" if pred else f"{'-':>10s}"
        rs = f"{pred / meas:10.3f}" if pred else f"{'-':>10s}"
        print(f"{what:50s} {ps} {meas / MIB:10.1f} {rs} {meas / mc:9.2f}")
    print("\nDARTS mode growth with candidates per edge (measured vs the child above):")
    order = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none")
    for k in range(1, 6):
        sub = nb201_subspace(order[:k], args.cells)
        sn = Supernet(sub, mode="darts", seed=0)
        for p in sn.arch_parameters():
            p.requires_grad_(False)
        pred = sn.predict_memory(b).total
        meas = measure(sn, sn.weight_parameters(), x, y)
        print(f"  {k} candidate(s): predicted {pred / MIB:7.1f}  measured {meas / MIB:7.1f}  "
              f"pred/meas {pred / meas:.3f}  vs child {meas / mc:.2f}")
    print(json.dumps({"binarized_vs_child_memory_ratio": round(results["binarized"] / mc, 3),
                      "darts_vs_child_memory_ratio": round(results["darts"] / mc, 3)}))


if __name__ == "__main__":
    main()
