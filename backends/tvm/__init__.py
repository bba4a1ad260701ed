"""TVM backend: IR → Relax, compilation for a target, measured latency (local and RPC),
a persistent latency cache, per-layer latency lookup tables, a persistent MetaSchedule tuning
database per target and the host comparison with PyTorch eager and ONNX Runtime."""

from nasir.backends.tvm.cache import LatencyCache, default_cache_path
from nasir.backends.tvm.compile import Compiled, compile_graph, example_inputs, tune
from nasir.backends.tvm.host_compare import HostLatencies, host_latencies
from nasir.backends.tvm.lut import LatencyLUT, build_lut, layer_key
from nasir.backends.tvm.measure import (
    LatencyResult,
    MeasureConfig,
    graph_key,
    measure,
    measure_compiled,
)
from nasir.backends.tvm.relax_lowering import LOWERINGS, lower, param_specs, prepare, random_weights
from nasir.backends.tvm.rpc import LocalCluster, RemoteDevice, local_cluster, measure_remote
from nasir.backends.tvm.targets import REGISTRY, TargetSpec, host_cpu, resolve_target
from nasir.backends.tvm.tuning import TuningStats, missing_tasks, tune_graph, tune_tasks
from nasir.backends.tvm.tuning_db import TuningDatabase, default_tuning_root

__all__ = [
    "LOWERINGS",
    "REGISTRY",
    "Compiled",
    "HostLatencies",
    "LatencyCache",
    "LatencyLUT",
    "LatencyResult",
    "LocalCluster",
    "MeasureConfig",
    "RemoteDevice",
    "TargetSpec",
    "TuningDatabase",
    "TuningStats",
    "build_lut",
    "compile_graph",
    "default_cache_path",
    "default_tuning_root",
    "example_inputs",
    "graph_key",
    "host_cpu",
    "host_latencies",
    "layer_key",
    "local_cluster",
    "lower",
    "measure",
    "measure_compiled",
    "measure_remote",
    "missing_tasks",
    "param_specs",
    "prepare",
    "random_weights",
    "resolve_target",
    "tune",
    "tune_graph",
    "tune_tasks",
]
