"""CUDA-target latency of reference networks: cross-compile here, measure on a GPU machine.

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
output against the stored PyTorch output (relative error), measures the latency with
nasir's measurement loop (warm-up, median over repeats, CV, retries) and, next to it, PyTorch
eager on the same GPU for the same network and weights (CUDA-event timing, same repeats).

Run: ``.venv/bin/python benchmarks/cuda_latency.py build /tmp/cuda_libs`` then, on the GPU
machine, ``python benchmarks/cuda_latency.py measure /tmp/cuda_libs``.
Last line JSON (measure): ``{"<name>": {"tvm_cuda_median_ms": …, "tvm_cuda_cv": …,
"torch_eager_cuda_median_ms": …, "tvm_vs_eager_latency_ratio": …, "rel_err": …}, …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

#: (name, space, reference, build options), batch 1: MobileNetV2 at ImageNet resolution and
#: NAS-Bench-201's ResNet cell network at CIFAR resolution (the libraries carry their weights,
#: so the set is kept small enough to ship to the device)
NETWORKS = [
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


def _torch_eager_ms(g, weights, x: np.ndarray, repeats: int, warmup: int) -> tuple[float, float]:
    import torch

    from nasir.backends.torch import load_weights
    from nasir.backends.torch import lower as torch_lower

    torch.backends.cudnn.benchmark = True
    m = torch_lower(g, seed=0).eval()
    load_weights(m, weights)
    m = m.cuda()
    xt = torch.from_numpy(x).cuda()
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            m(xt)
        torch.cuda.synchronize()
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            m(xt)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
    arr = np.asarray(times)
    return float(np.median(arr)), float(arr.std() / arr.mean())


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


def measure(out: str, repeats: int, warmup: int) -> None:
    _load_cuda_runtime()
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from nasir.backends.tvm.measure import MeasureConfig, run_timing
    from nasir.backends.tvm.relax_lowering import prepare, random_weights
    from nasir.text import parse_graph

    dev = tvm.cuda(0)
    if not dev.exist:
        raise SystemExit("no CUDA device here")
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
        rel_err = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
        _, med, cv, retries, flagged = run_timing(vm, dev, args, cfg)
        with open(os.path.join(out, f"{name}.graph")) as f:
            g = parse_graph(f.read())
        weights = random_weights(prepare(g), entry["seed"])
        eager, eager_cv = _torch_eager_ms(g, weights, x, repeats, warmup)
        figures[name] = {"tvm_cuda_median_ms": round(med, 4), "tvm_cuda_cv": round(cv, 4),
                         "retries": retries, "flagged": flagged,
                         "torch_eager_cuda_median_ms": round(eager, 4),
                         "torch_eager_cuda_cv": round(eager_cv, 4),
                         "tvm_vs_eager_latency_ratio": round(med / eager, 3),
                         "rel_err": float(f"{rel_err:.3g}"), "compile_s": entry["compile_s"],
                         "load_s": round(load_s, 2), "target": entry["target"]}
        print(f"{name} {entry['input_shape']} batch 1: TVM {med:.3f} ms (cv {cv:.3f}), "
              f"torch eager {eager:.3f} ms (cv {eager_cv:.3f}), ratio {med / eager:.2f}; "
              f"rel err vs PyTorch {rel_err:.2e}")
    print(json.dumps(figures))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="cross-compile here (needs nvcc, no GPU)")
    b.add_argument("dir")
    b.add_argument("--arch", default="sm_90")
    b.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure", help="measure on the GPU machine")
    m.add_argument("dir")
    m.add_argument("--repeats", type=int, default=100)
    m.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.dir, args.arch, args.seed)
    else:
        measure(args.dir, args.repeats, args.warmup)


if __name__ == "__main__":
    main()
