"""Store commands: ``nasir runs / show / report`` on a 5,000-trial store vs a small one.

    .venv/bin/python benchmarks/store_commands.py [--trials 5000] [--baseline 50] [--repeats 3]

The wall-time bounds that ``tests/test_reliability_load.py`` used to assert live here as
figures. Baseline in the same run: the same commands on a ``--baseline``-trial store
(command start-up, imports and a near-empty store), so ``ratio`` is what the big store adds
(1.0 would mean its size costs nothing; linear growth would be ``trials / baseline``).
Each command is timed ``--repeats`` times, best run kept. The old test bounds (runs < 5 s,
show < 10 s, report < 30 s at 5,000 trials) are reported as ``old_test_bounds_met``.
Ends with one JSON line. The store helpers are the test's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_reliability_load import fill_store, time_commands

#: what the test asserted before issue 19, at 5,000 trials (seconds, wall)
OLD_BOUNDS = {"runs": 5.0, "show": 10.0, "report": 30.0}


def main() -> None:
    """Fill both stores, time the commands on each, print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--baseline", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nasir_store_commands_")
    best: dict[str, dict[str, float]] = {}
    folders = {}
    for label, n in (("baseline", args.baseline), ("big", args.trials)):
        folders[label] = os.path.join(tmp, label, "runs", "run")
        fill_s = fill_store(folders[label], n)
        print(f"{label}: {n:,} trials written in {fill_s:.1f} s", flush=True)
    for _ in range(args.repeats):  # interleaved, best of each: load only slows a run down
        for label, folder in folders.items():
            for k, v in time_commands(folder).items():
                best.setdefault(label, {})[k] = min(best.get(label, {}).get(k, v), v)
    ratio = {k: best["big"][k] / best["baseline"][k] for k in best["big"]}
    for k in best["big"]:
        print(f"nasir {k:7} {args.trials:,} trials {best['big'][k]:6.2f} s   "
              f"{args.baseline:,} trials {best['baseline'][k]:6.2f} s   ratio {ratio[k]:.2f}")
    met = all(best["big"][k] < OLD_BOUNDS[k] for k in OLD_BOUNDS)
    print(json.dumps({"benchmark": "store_commands", "trials": args.trials,
                      "baseline_trials": args.baseline,
                      "big_s": {k: round(v, 3) for k, v in best["big"].items()},
                      "baseline_s": {k: round(v, 3) for k, v in best["baseline"].items()},
                      "ratio_big_over_baseline": {k: round(v, 2) for k, v in ratio.items()},
                      "old_test_bounds_met": met,
                      "load_avg": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
