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

from nasir.backends.torch.memory import (
    ResourceError,
    check_memory,
    measure_training_step,
    predict_training_memory,
)
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
    for p in params:
        p.grad = None
    torch.manual_seed(0)
    return measure_training_step(module, step).total


def _peak(net: Supernet, arch: dict, value: float) -> None:
    with torch.no_grad():
        for label, opts in net.decisions().items():
            a = net.alphas[label.replace(".", "__")]
            a.zero_()
            a[opts.index(arch[label])] = value


def _short(path: dict) -> str:
    return "".join(str(OPS.index(v)) for v in path.values())


def _arch_grad(net: Supernet, on: bool) -> None:
    for p in net.arch_parameters():
        p.requires_grad_(on)
        p.grad = None


def run_config(channels: int, batch: int, cells: int, full: bool) -> tuple[list, dict]:
    """Rows ``(what, predicted, measured)`` of one configuration, plus the measured
    child / binarized / darts figures. ``full`` adds the rows of the main table."""
    sp = nb201_subspace(OPS, cells, channels)
    arch = dict(get_space("nb201").reference("best_cifar10"))
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    net = Supernet(sp, mode="single", seed=0)
    _arch_grad(net, False)
    child = net.child(arch)
    rows = []
    mc = measure(child, list(child.parameters()), x, y)
    rows.append(("child (best_cifar10)", predict_training_memory(net.child_graph(arch),
                                                                 batch).total, mc))
    figs = {"child": mc}
    for mode in ("single", "binarized", "gumbel", "darts"):
        net.set_mode(mode)
        net.set_path(arch)
        if mode == "single" and not full:
            continue
        pred = net.predict_memory(batch, mode=mode, assignment=arch).total
        if mode == "binarized":
            # logits peaked on the child's architecture: the sampled path is the child's,
            # so the comparison is like for like (the sampling itself is real)
            _peak(net, arch, 30.0)
            meas = measure(net, net.weight_parameters(), x, y)
            assert net.last_path == {k: v for k, v in arch.items() if k in net.last_path}
            rows.append(("binarized, weight step (child's path)", pred, meas))
            figs["binarized"] = meas
            if full:
                _peak(net, arch, 0.0)
                meas_u = measure(net, net.weight_parameters(), x, y)
                path = dict(net.last_path)
                pred_u = net.predict_memory(batch, mode=mode, assignment=path).total
                rows.append((f"binarized, weight step (uniform, path {_short(path)})",
                             pred_u, meas_u))
            # the architecture step: logits train through the straight-through gate
            _peak(net, arch, 30.0)
            _arch_grad(net, True)
            pred_a = net.predict_memory(batch, mode=mode, assignment=arch).total
            meas_a = measure(net, list(net.parameters()), x, y)
            rows.append(("binarized, logits train (gate on)", pred_a, meas_a))
            _arch_grad(net, False)
            _peak(net, arch, 0.0)
            continue
        if mode == "single":
            meas = measure(net, net.weight_parameters(), x, y)
            rows.append(("single path (child's)", pred, meas))
            continue
        meas = measure(net, net.weight_parameters(), x, y)
        rows.append((f"{mode}, weight step (logits frozen)", pred, meas))
        figs[mode] = meas
        if mode == "darts" or full:
            # logits require grad (DARTS' architecture step, or a weight step that does
            # not freeze them): every weighted candidate output is kept for backward
            _arch_grad(net, True)
            pred_a = net.predict_memory(batch, mode=mode).total
            meas_a = measure(net, list(net.parameters()), x, y)
            rows.append((f"{mode}, logits train", pred_a, meas_a))
            _arch_grad(net, False)
    return rows, figs


def _print(rows: list, mc: int) -> None:
    print(f"  {'what':48s} {'predicted':>10s} {'measured':>10s} {'pred/meas':>10s} "
          f"{'vs child':>9s}")
    for what, pred, meas in rows:
        print(f"  {what:48s} {pred / MIB:10.1f} {meas / MIB:10.1f} {pred / meas:10.3f} "
              f"{meas / mc:9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", default="8x16,8x48,16x16,16x48",
                    help="more CxB configurations (width x batch) to validate on; '' for none")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b, c = args.batch, args.channels
    errors: list[float] = []
    print(f"NB201 skeleton, C={c}, 32x32, {args.cells} cell(s)/stage, batch {b}, SGD; MiB "
          "(measured: allocator bytes from the profiler + resident weights)")
    rows, figs = run_config(c, b, args.cells, True)
    mc = figs["child"]
    _print(rows, mc)
    errors += [abs(p / m - 1) for _, p, m in rows]

    print("\nDARTS mode with k candidates per edge (same skeleton, C, batch):")
    print(f"  {'k':>2s} {'candidates':42s} {'logits frozen':>25s} {'logits train':>25s}")
    print(f"  {'':>2s} {'':42s} {'pred':>10s} {'meas':>8s} {'/child':>6s}"
          f" {'pred':>10s} {'meas':>8s} {'/child':>6s}")
    order = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none")
    torch.manual_seed(0)
    x = torch.randn(b, 3, 32, 32)
    y = torch.randint(0, 10, (b,))
    for k in range(1, 6):
        sn = Supernet(nb201_subspace(order[:k], args.cells, c), mode="darts", seed=0)
        assert all(set(opts) == set(order[:k]) for opts in sn.decisions().values())
        out = []
        for on in (False, True):
            _arch_grad(sn, on)
            pred = sn.predict_memory(b).total
            params = list(sn.parameters()) if on else sn.weight_parameters()
            meas = measure(sn, params, x, y)
            errors.append(abs(pred / meas - 1))
            out.append(f"{pred / MIB:10.1f} {meas / MIB:8.1f} {meas / mc:6.2f}")
        names = "+".join(o.replace("_connect", "").replace("nor_", "") for o in order[:k])
        print(f"  {k:2d} {names:42s} {out[0]} {out[1]}")
    print("  (logits frozen: a candidate costs what its ops save -- skip and none cost ~0; "
          "logits train: every candidate that runs keeps its output -- none is not run, "
          "w*0 adds nothing)")

    for cfg in filter(None, args.grid.split(",")):
        cc, bb = (int(v) for v in cfg.split("x"))
        rows_g, figs_g = run_config(cc, bb, args.cells, False)
        print(f"\nvalidation: C={cc}, batch {bb}")
        _print(rows_g, figs_g["child"])
        errors += [abs(p / m - 1) for _, p, m in rows_g]

    # refuse what does not fit: a budget between the binarized and the DARTS prediction
    net = Supernet(nb201_subspace(OPS, args.cells, c), mode="darts", seed=0)
    _arch_grad(net, False)
    arch = dict(get_space("nb201").reference("best_cifar10"))
    pb = net.predict_memory(b, mode="binarized", assignment=arch)
    pd = net.predict_memory(b, mode="darts")
    budget = (pb.total + pd.total) // 2
    check_memory(pb, budget, "binarized supernet")
    try:
        check_memory(pd, budget, "DARTS supernet")
        raise AssertionError("the DARTS supernet should have been refused")
    except ResourceError as e:
        print(f"\nbudget {budget / MIB:.1f} MiB: binarized accepted; DARTS refused: {e.message}")

    worst = max(errors)
    print(f"\nworst |predicted/measured - 1| over {len(errors)} rows: {worst:.3f}")
    print(json.dumps({"binarized_vs_child_memory_ratio": round(figs["binarized"] / mc, 3),
                      "darts_vs_child_memory_ratio": round(figs["darts"] / mc, 3),
                      "memory_prediction_max_error": round(worst, 3)}))


if __name__ == "__main__":
    main()
