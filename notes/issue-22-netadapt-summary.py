"""Summarise a NetAdapt run (issue 22): the strategy rebuilt from the store's events; each
iteration's chosen network with its table latency, short-term accuracy and the runner's
measured latency; with a second argument (repeats), the chosen networks re-measured on the
host, interleaved, 3 rounds (median of the rounds' medians).

    .venv/bin/python notes/issue-22-netadapt-summary.py RUN_DIR [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from nasir.passes.hashing import assignment_hash
from nasir.runtime.store import RunStore
from nasir.runtime.worker import build_space
from nasir.strategies import make_strategy


def main(run: str, repeats: int | None) -> None:
    """Print the summary of the NetAdapt run in ``run``."""
    st = RunStore.open(run)
    cfg = st.config
    sp = build_space(cfg, run)
    s: Any = make_strategy("netadapt", sp, seed=cfg["seed"], objective="reward",
                           **cfg["strategy"]["options"])
    s.replay(st.events())
    trials = st.trials()
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        by_hash.setdefault(t["hash"], []).append(t)
    start = sp.reference("start")
    rows = [("start", None, None, s.lat0, by_hash[assignment_hash(sp, start)][0])]
    for it in s.iterations:
        a = sp.check(it["assignment"])
        t = next(x for x in by_hash[assignment_hash(sp, a)]
                 if x["metrics"].get("stage") == "short_term")
        rows.append((f"iter {it['iter']}", it["layer"], it["filters"], it["latency_table_ms"], t))
    per = [sum(1 for t in s.trials if t.get("iter") == i)
           for i in range(1, len(s.iterations) + 1)]
    print(f"trials {len(trials)}; stop: {s.stop}; budget (table) {s.budget:.4f} ms; "
          f"proposals per iteration: {per}")
    print(f"{'network':8} {'layer':6} {'filters':7} {'table ms':9} {'acc(short)':10} "
          "measured ms (trial)")
    for name, layer, f, lat, t in rows:
        m = t["metrics"]
        print(f"{name:8} {layer!s:6} {f!s:7} {lat:9.4f} {m['accuracy']:10.3f} "
              f"{m.get('latency_ms', float('nan')):.4f}")
    for t in trials:
        if t["metrics"].get("stage") == "long_term":
            m = t["metrics"]
            print(f"final (long-term) trial {t['id']}: accuracy {m['accuracy']:.3f}, "
                  f"measured {m.get('latency_ms', float('nan')):.4f} ms, hash {t['hash'][:12]}")
    if repeats:
        from nasir.backends.tvm import MeasureConfig, measure, resolve_target

        tgt = resolve_target("host")
        mc = MeasureConfig(repeats=repeats, warmup=2, min_repeat_ms=2.0)
        nets = [start] + [sp.check(it["assignment"]) for it in s.iterations]
        got: dict[int, list[float]] = {i: [] for i in range(len(nets))}
        for _ in range(3):
            for i, a in enumerate(nets):
                got[i].append(float(measure(sp.instantiate(a), tgt, mc).median_ms or 0.0))
        print("re-measured, interleaved, 3 rounds (ms):",
              [round(statistics.median(v), 4) for v in got.values()])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
