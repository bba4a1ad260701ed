"""Test-retest: where does tiny_proxyless's tau 0.889 come from (table noise, reference noise, model)?"""
import os, sys, tempfile, time, json
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np
from scipy.stats import kendalltau
import latency_lut as L
from dataclasses import replace
from nasir.backends.tvm import MeasureConfig
from nasir.backends.tvm.lut import _typed
from nasir.backends.tvm.kernel_lut import KernelLUT
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.backends.tvm import resolve_target
from nasir.backends.tvm.compile import compile_graph
from nasir.backends.tvm.measure import measure_compiled
from nasir.backends.tvm.machine_speed import at_speed
from nasir.passes.sampling import sample
import torch; torch.set_num_threads(1)
name = sys.argv[1]; n = int(sys.argv[2]); res = int(sys.argv[3]) if len(sys.argv) > 3 else 32
space = L._space(name, res)
rng = np.random.default_rng(0)
cands = sample(space, rng, n)
db = TuningDatabase(resolve_target("host"), "/tmp/fid/db")
cfg = MeasureConfig(batch=1, repeats=9, warmup=2, min_repeat_ms=5, settle_s=10.0, speed_tol=float(os.environ.get("DIAG_TOL", "0.25")))
graphs = [_typed(space.instantiate(a)) for a in cands]
sums = []
for b in range(2):
    t0 = time.time()
    lut = KernelLUT(os.path.join(tempfile.mkdtemp(), "k.sqlite"), db, config=cfg, scope="diag", timing_rounds=4)
    s = [float(sum(lut.latency(k) for k in lut.ensure(g))) for g in graphs]
    sums.append(s); lut.close(); print("table", b, round(time.time() - t0), "s", flush=True)
comp = [compile_graph(g, resolve_target("host"), batch=1, db=db) for g in graphs]
plain = replace(cfg, settle_s=0.0)
meas = []
for p in range(2):
    t0 = time.time(); m = []
    for c in comp:
        rs = []
        for _ in range(3):
            rs += at_speed(lambda: [measure_compiled(c, plain) for _ in range(2)], cfg.settle_s, cfg.speed_tol)[0]
        m.append(min(r.median_ms for r in rs if r.ok))
    meas.append(m); print("pass", p, round(time.time() - t0), "s", flush=True)
S1, S2 = map(np.array, sums); A, B = map(np.array, meas)
t = lambda x, y: round(float(kendalltau(x, y).statistic), 3)
out = {"tau_S1_S2": t(S1, S2), "tau_A_B": t(A, B), "tau_S1_A": t(S1, A), "tau_S2_B": t(S2, B), "tau_S1_B": t(S1, B),
       "tau_S2_A": t(S2, A), "tau_Smean_ABmin": t((S1 + S2) / 2, np.minimum(A, B)), "tau_Smin_ABmin": t(np.minimum(S1, S2), np.minimum(A, B)),
       "sd_log_S": float(np.std(np.log(S1 / S2))), "sd_log_AB": float(np.std(np.log(A / B))),
       "iqr": [float(np.percentile(A, 25)), float(np.percentile(A, 75))]}
print(json.dumps(out))
json.dump({"S1": list(S1), "S2": list(S2), "A": list(A), "B": list(B)}, open(f"/tmp/n15/diag_{name}_{os.environ.get('DIAG_TOL', '0.25')}.json", "w"))
