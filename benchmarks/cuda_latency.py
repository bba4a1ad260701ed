"""CUDA-target latency of reference networks, and PyTorch timed the same way beside it.

nasir compiles for CUDA on any machine with the CUDA toolkit (``nvcc``) — no GPU needed —
and the compiled library runs wherever TVM's *runtime* and a GPU are. This script does the
two halves separately, as a build farm and a lab device would:

``build DIR`` (here): lowers each reference network to Relax, compiles it with TVM's default
CUDA pipeline (DLight GPU schedules, no tuning) for ``--arch`` (``sm_90`` = Hopper), exports
the library to ``DIR/<name>.so`` and stores the input and the PyTorch backend's output for
the same weights, plus a manifest.

``measure DIR`` (on the GPU machine; needs only TVM's runtime libraries —
``TVM_USE_RUNTIME_LIB=1`` works — numpy, torch, nasir and NVRTC (``cuda-bindings``) or
``nvcc``: TVM 0.27 keeps CUDA kernels as source in the library and compiles them for the
device's own compute capability when the library is loaded): loads each library, checks the
output against the stored PyTorch output (relative error), and times it next to three
PyTorch baselines for the same network and weights on the same GPU.

Fair timing: every variant goes through nasir's own measurement loop
(:func:`nasir.backends.tvm.measure.run_timing`: ``warmup`` calls, then ``repeats`` repeats,
median and CV, noisy runs retried). PyTorch enters it dressed as a TVM VM
(:class:`TorchRunner`) whose ``time_evaluator`` follows TVM's own: one untimed call, then
per repeat ``number`` back-to-back calls timed together — CUDA events around the batch on a
GPU, a wall clock on the CPU — with ``number`` grown (×1.618 or to fill ``min_repeat_ms``)
until a repeat lasts ``min_repeat_ms``. So PyTorch's Python launch overhead overlaps the GPU
work exactly as TVM's VM's does, instead of one synchronised call per sample. Baselines:

- ``eager``: the lowered ``nn.Module`` in ``torch.no_grad()`` (``cudnn.benchmark`` on);
- ``cuda_graph``: one forward captured in a ``torch.cuda.CUDAGraph`` and replayed (no
  Python and no launch overhead at all — a floor for launch costs, CUDA only);
- ``compile``: ``torch.compile(mode="max-autotune-no-cudagraphs")`` on CUDA — Inductor's
  tuned kernels launched one by one, as TVM's VM launches its kernels (it uses no CUDA
  graphs by default), so ``tvm_vs_compile`` compares compiled code with compiled code;
  ``mode="default"`` on the CPU (``--compile-mode`` overrides both).

``host`` (any machine): the same comparison on this machine's CPU — TVM compiled for the
host vs PyTorch eager vs ``torch.compile``, through the same timing code — for a small
network; the CUDA parts are reported as skipped where there is no GPU (and, where there is
one, PyTorch's three CUDA variants are timed too). ``measure`` on a machine without a GPU
says so and runs ``host``.

Run: ``.venv/bin/python benchmarks/cuda_latency.py build /tmp/cuda_libs`` then, on the GPU
machine, ``python benchmarks/cuda_latency.py measure /tmp/cuda_libs``; anywhere,
``.venv/bin/python benchmarks/cuda_latency.py host``.
Last line JSON: ``{"device": …, "timing": …, "networks": {"<name>": {"tvm_<dev>_median_ms":
…, "torch_<variant>_<dev>_median_ms": …, "tvm_vs_<variant>_latency_ratio": …,
"rel_err": …}, …}, "skipped": {…}}`` (``<dev>`` is ``cuda`` or ``host``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

Network = tuple[str, str, str, dict[str, Any]]
#: (name, space, reference, build options), batch 1: MobileNetV2 at ImageNet resolution and
#: NAS-Bench-201's ResNet cell network at CIFAR resolution (the libraries carry their weights,
#: so the set is kept small enough to ship to the device)
NETWORKS: list[Network] = [
    ("mobilenet_v2", "mobilenet_v2", "mobilenet_v2_1.0", {"input_shape": (3, 224, 224)}),
    ("nb201_resnet", "nb201", "resnet", {"input_shape": (3, 32, 32), "channels": 16}),
]


def _graph(space: str, ref: str, opts: dict):
    from nasir.passes import verify
    from nasir.spaces import get_reference

    sp, a = get_reference(space, ref, **opts)
    g = sp.instantiate(a)
    verify(g)
    return g


def build(out: str, arch: str, seed: int) -> None:
    import torch

    from nasir.backends.torch import load_weights
    from nasir.backends.torch import lower as torch_lower
    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.relax_lowering import prepare, random_weights
    from nasir.text import print_graph

    os.makedirs(out, exist_ok=True)
    manifest = []
    for name, space, ref, opts in NETWORKS:
        g = _graph(space, ref, opts)
        weights = random_weights(prepare(g), seed)
        shape = tuple(g.inputs[0].type.shape)
        x = np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)
        m = torch_lower(g, seed=0).eval()
        load_weights(m, weights)
        with torch.no_grad():
            ref_out = m(torch.from_numpy(x)).numpy()
        c = compile_graph(g, {"kind": "cuda", "arch": arch}, batch=1, weights=weights)
        c.export(os.path.join(out, f"{name}.so"))
        np.save(os.path.join(out, f"{name}.input.npy"), x)
        np.save(os.path.join(out, f"{name}.expected.npy"), ref_out)
        with open(os.path.join(out, f"{name}.graph"), "w") as f:
            f.write(print_graph(g))
        manifest.append({"name": name, "space": space, "reference": ref,
                         "input_shape": list(shape), "target": str(c.target),
                         "compile_s": round(c.compile_s, 2), "seed": seed})
        print(f"{name}: compiled for {c.target} in {c.compile_s:.1f} s")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


TIMING = ("nasir run_timing: warm-up calls, then per repeat N back-to-back calls timed "
          "together (N grown until a repeat lasts min_repeat_ms, as TVM's time_evaluator), "
          "median over repeats, CV, noisy runs retried")
#: small networks ``host`` times (a quick check of the timing code on any machine)
HOST_NETWORKS: list[Network] = [
    ("nb201_resnet_small", "nb201", "resnet",
     {"input_shape": (3, 32, 32), "channels": 16, "cells_per_stage": 1}),
]
#: torch.compile mode per device (see the module docstring for why)
COMPILE_MODES = {"cuda": "max-autotune-no-cudagraphs", "cpu": "default"}


class _TorchDevice:
    """The ``dev`` of :func:`run_timing` for PyTorch: ``sync`` and a timer for a batch of
    calls like TVM's for the device (CUDA events on the current stream; a wall clock)."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.torch, self.cuda = torch, cuda

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def elapsed_ms(self, fn: Callable[..., Any], args: tuple, number: int) -> float:
        self.sync()
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            stop = self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn(*args)
            stop.record()
            stop.synchronize()
            return float(start.elapsed_time(stop))
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn(*args)
        return (time.perf_counter_ns() - t0) / 1e6


class TorchRunner:
    """A PyTorch callable dressed as a TVM VM, so that nasir's :func:`run_timing` times it
    exactly as it times a compiled TVM network (see the module docstring).

    >>> r = TorchRunner(lambda: sum(range(100)))
    >>> out = r.time_evaluator("main", _TorchDevice(False), repeat=3, min_repeat_ms=1)()
    >>> len(out.results), r.number > 1
    (3, True)
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.number = 1

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.fn

    def time_evaluator(self, name: str, dev: _TorchDevice, number: int = 1, repeat: int = 1,
                       min_repeat_ms: float = 0) -> Callable[..., SimpleNamespace]:
        """TVM's ``time_evaluator``: seconds per call, one entry per repeat."""

        def run(*args: Any) -> SimpleNamespace:
            self.fn(*args)  # TVM's untimed first call
            dev.sync()
            self.number = number
            results = []
            for _ in range(repeat):
                duration_ms, zero = 0.0, 0
                while True:
                    if duration_ms > 0:
                        self.number = int(max(min_repeat_ms / (duration_ms / self.number) + 1,
                                              self.number * 1.618))
                    duration_ms = dev.elapsed_ms(self.fn, args, self.number)
                    zero += duration_ms == 0
                    if duration_ms >= min_repeat_ms or zero >= 100:
                        break
                results.append(duration_ms / 1e3 / self.number)
            return SimpleNamespace(results=tuple(results))

        return run


def _time(vm: Any, dev: Any, args: list[Any], cfg: Any) -> dict[str, Any]:
    from nasir.backends.tvm.measure import run_timing

    _, med, cv, retries, flagged = run_timing(vm, dev, args, cfg)
    number = getattr(vm, "number", None)
    return {"median_ms": round(med, 4), "cv": round(cv, 4), "retries": retries,
            "flagged": flagged, **({"calls_per_repeat": number} if number else {})}


def _torch_module(g, weights, cuda: bool):
    from nasir.backends.torch import load_weights
    from nasir.backends.torch import lower as torch_lower

    m = torch_lower(g, seed=0).eval()
    load_weights(m, weights)
    return m.cuda() if cuda else m


def _cuda_graph(m, xt):
    """One forward captured in a CUDA graph: ``(replay, output)`` (output refreshed in
    place by each replay)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as the CUDA-graph docs ask
        for _ in range(3):
            m(xt)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = m(xt)
    return graph.replay, out


def _rel(got, ref) -> float:
    a, b = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(f"{float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)):.3g}")


def torch_baselines(g, weights, x: np.ndarray, cfg: Any, *, cuda: bool,
                    compile_mode: str | None = None) -> dict[str, dict[str, Any]]:
    """PyTorch eager, CUDA graph (CUDA only) and ``torch.compile`` for the same network and
    weights, each timed by :func:`run_timing` through :class:`TorchRunner`; each variant's
    ``rel_err`` is against eager's output, a variant that cannot run says ``skipped``."""
    import torch

    torch.backends.cudnn.benchmark = True
    dev = _TorchDevice(cuda)
    m = _torch_module(g, weights, cuda)
    xt = torch.from_numpy(x).cuda() if cuda else torch.from_numpy(x)
    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        ref = m(xt).float().cpu().numpy()
        out["eager"] = _time(TorchRunner(lambda: m(xt)), dev, [], cfg)
        if cuda:
            replay, y = _cuda_graph(m, xt)
            replay()
            out["cuda_graph"] = {**_time(TorchRunner(replay), dev, [], cfg),
                                 "rel_err": _rel(y.float().cpu().numpy(), ref)}
        else:
            out["cuda_graph"] = {"skipped": "CUDA graphs need a CUDA device"}
        mode = compile_mode or COMPILE_MODES["cuda" if cuda else "cpu"]
        try:
            cm = torch.compile(m, mode=mode)
            t0 = time.perf_counter()
            y = cm(xt)
            dev.sync()
            compile_s = time.perf_counter() - t0
            out["compile"] = {**_time(TorchRunner(lambda: cm(xt)), dev, [], cfg),
                              "mode": mode, "compile_s": round(compile_s, 1),
                              "rel_err": _rel(y.float().cpu().numpy(), ref)}
        except Exception as e:  # no C++ compiler / Triton here: say so, keep the rest
            msg = str(e).strip().splitlines()
            out["compile"] = {"skipped": f"torch.compile({mode!r}) failed: "
                                         f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]}
    return out


def _figures(where: str, tvm_fig: dict[str, Any] | None,
             torch_fig: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat figures: ``tvm_<where>_*``, ``torch_<variant>_<where>_*`` and the ratios."""
    fig = {f"tvm_{where}_{k}": v for k, v in (tvm_fig or {}).items()}
    for variant, f in torch_fig.items():
        fig.update({f"torch_{variant}_{where}_{k}": v for k, v in f.items()})
        if tvm_fig and "median_ms" in f:
            fig[f"tvm_vs_{variant}_latency_ratio"] = round(
                tvm_fig["median_ms"] / f["median_ms"], 3)
    return fig


def _load_cuda_runtime() -> None:
    """Load TVM's CUDA runtime module where only the runtime library is in use.

    With the compiler library TVM loads it as a dependency; a runtime-only TVM
    (``TVM_USE_RUNTIME_LIB=1``, or a wheel without the compiler) must load it itself. Its
    ``libcudart`` is found among the loaded libraries once torch has initialised CUDA, or in
    the usual toolkit folders.
    """
    import ctypes
    import glob

    import torch
    import tvm

    if "tvm_compiler" in getattr(tvm.base, "_LOADED_LIBS", {}):
        return
    if torch.cuda.is_available():
        torch.cuda.init()
    candidates = sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so.*")) + \
        sorted(glob.glob("/usr/local/cuda*/lib/libcudart.so.*"))
    for path in candidates:  # the first one that loads
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError:
            continue
    lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    # TVM 0.27 stores CUDA kernels as source and compiles them when the library is loaded
    # (``tvm_callback_cuda_compile``, NVRTC or nvcc). The callback asks the compiler's
    # ``Target.current()`` for the arch, which the runtime library doesn't have; without a
    # target scope it falls back to the device's own compute capability, so say "none".
    from tvm.target import Target

    Target.current = staticmethod(lambda allow_none=True: None)  # type: ignore[method-assign]


def measure(out: str, repeats: int, warmup: int, compile_mode: str | None) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: skipping the CUDA measurements; timing on the host "
              "instead", flush=True)
        return host(repeats, warmup, compile_mode, None)
    _load_cuda_runtime()
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from nasir.backends.tvm.measure import MeasureConfig
    from nasir.backends.tvm.relax_lowering import prepare, random_weights
    from nasir.text import parse_graph

    dev = tvm.cuda(0)
    if not dev.exist:
        raise SystemExit("torch sees a CUDA device but TVM does not")
    print(f"device: {dev.device_name}, compute {dev.compute_version}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    cfg = MeasureConfig(repeats=repeats, warmup=warmup)
    figures = {}
    for entry in manifest:
        name = entry["name"]
        x = np.load(os.path.join(out, f"{name}.input.npy"))
        expected = np.load(os.path.join(out, f"{name}.expected.npy"))
        t0 = time.perf_counter()
        lib = tvm.runtime.load_module(os.path.join(out, f"{name}.so"))
        vm = VirtualMachine(lib, dev)
        load_s = time.perf_counter() - t0
        args = [tvm.runtime.tensor(x, dev)]
        got = vm["main"](*args).numpy()
        tvm_fig = _time(vm, dev, args, cfg)
        with open(os.path.join(out, f"{name}.graph")) as f:
            g = parse_graph(f.read())
        weights = random_weights(prepare(g), entry["seed"])
        tfig = torch_baselines(g, weights, x, cfg, cuda=True, compile_mode=compile_mode)
        figures[name] = {**_figures("cuda", tvm_fig, tfig), "rel_err": _rel(got, expected),
                         "compile_s": entry["compile_s"], "load_s": round(load_s, 2),
                         "target": entry["target"]}
        _report(name, entry["input_shape"], "cuda", figures[name])
    return {"device": torch.cuda.get_device_name(0), "timing": TIMING, "networks": figures,
            "skipped": {}}


def _report(name: str, shape: Any, where: str, fig: dict[str, Any]) -> None:
    parts = [f"{v}: {fig[f'torch_{v}_{where}_median_ms']:.3f} ms"
             for v in ("eager", "cuda_graph", "compile")
             if f"torch_{v}_{where}_median_ms" in fig]
    tvm_ms = fig.get(f"tvm_{where}_median_ms")
    print(f"{name} {list(shape)} batch 1 on {where}: "
          f"{f'TVM {tvm_ms:.3f} ms, ' if tvm_ms is not None else ''}torch {', '.join(parts)}; "
          f"rel err {fig.get('rel_err')}", flush=True)


def host(repeats: int, warmup: int, compile_mode: str | None,
         threads: int | None) -> dict[str, Any]:
    """TVM on the host vs PyTorch eager and compiled on the CPU, for :data:`HOST_NETWORKS`
    (and PyTorch's CUDA variants where a GPU is)."""
    import torch

    from nasir.backends.tvm.compile import compile_graph
    from nasir.backends.tvm.measure import MeasureConfig
    from nasir.backends.tvm.relax_lowering import prepare, random_weights

    if threads:
        torch.set_num_threads(threads)
    cfg = MeasureConfig(repeats=repeats, warmup=warmup)
    cuda = torch.cuda.is_available()
    skipped = {} if cuda else {
        "tvm_cuda": "no CUDA device (build + measure on a GPU machine)",
        "torch_cuda": "no CUDA device", "torch_cuda_graph": "no CUDA device"}
    figures: dict[str, Any] = {}
    for name, space, ref, opts in HOST_NETWORKS:
        g = _graph(space, ref, opts)
        weights = random_weights(prepare(g), 0)
        x = np.random.default_rng(0).standard_normal(
            (1, *g.inputs[0].type.shape)).astype(np.float32)
        c = compile_graph(g, "host", batch=1, weights=weights)
        vm, dev, args = _host_vm(c, x)
        tvm_fig = _time(vm, dev, args, cfg)
        tfig = torch_baselines(g, weights, x, cfg, cuda=False, compile_mode=compile_mode)
        expected = _torch_module(g, weights, False)(torch.from_numpy(x)).detach().numpy()
        fig = {**_figures("host", tvm_fig, tfig), "rel_err": _rel(c.run([x])[0], expected),
               "tvm_compile_s": round(c.compile_s, 1), "target": str(c.target)}
        _report(name, opts["input_shape"], "host", fig)
        if cuda:
            cfig = torch_baselines(g, weights, x, cfg, cuda=True, compile_mode=compile_mode)
            fig.update(_figures("cuda", None, cfig))
            _report(name, opts["input_shape"], "cuda", fig)
        figures[name] = fig
    return {"device": "cpu" + (f"+{torch.cuda.get_device_name(0)}" if cuda else ""),
            "threads": torch.get_num_threads(), "timing": TIMING, "networks": figures,
            "skipped": skipped}


def _host_vm(c, x: np.ndarray):
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    return relax.VirtualMachine(c.executable, dev), dev, [tvm.runtime.tensor(x, dev)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="cross-compile here (needs nvcc, no GPU)")
    b.add_argument("dir")
    b.add_argument("--arch", default="sm_90")
    b.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure", help="measure on the GPU machine (no GPU: runs host)")
    m.add_argument("dir")
    h = sub.add_parser("host", help="TVM vs PyTorch eager / compiled on this CPU")
    h.add_argument("--threads", type=int, default=None,
                   help="CPU threads for TVM and PyTorch alike (default: all cores)")
    for q in (m, h):
        q.add_argument("--repeats", type=int, default=100)
        q.add_argument("--warmup", type=int, default=10)
        q.add_argument("--compile-mode", default=None,
                       help="torch.compile mode (default: max-autotune-no-cudagraphs on "
                            "CUDA, default on the CPU)")
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.dir, args.arch, args.seed)
        return
    if args.cmd == "measure":
        result = measure(args.dir, args.repeats, args.warmup, args.compile_mode)
    else:
        result = host(args.repeats, args.warmup, args.compile_mode, args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    if "--threads" in sys.argv:  # TVM reads its thread count once, when its pool starts
        os.environ["TVM_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]
    main()
