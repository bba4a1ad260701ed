"""``kill -9`` of the driver at >= 20 random points across one run; resume after each.

    .venv/bin/python benchmarks/reliability_kill.py [--kills 24] [--trials 150] [--seed 0]

Each kill lands at a random moment after the (resumed) driver made progress — during a
trial, a proposal or a feedback. After each kill the store is checked (no finished trial
lost or changed, no trial or feedback repeated), and at the end the run is compared with an
uninterrupted run of the same seed (the baseline, timed in the same process). Ends with one
JSON line. ``tests/test_reliability_kill.py`` runs 3 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_reliability_kill import kill_and_resume


def main() -> None:
    """Kill, resume, compare."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    res = kill_and_resume(tempfile.mkdtemp(prefix="nasir_kill_"), args.kills, args.trials,
                          seed=args.seed, max_delay_s=0.4)
    for k, p in enumerate(res["points"], 1):
        print(f"kill {k:2d}: {p['finished']:3d} trials finished, {p['in_flight']} in flight, "
              f"lost {p['lost']}, duplicated {p['duplicated']}")
    print(f"{res['kills']} kills: lost {res['lost']}, duplicated {res['duplicated']}, same "
          f"trials as the uninterrupted run: {res['same_as_uninterrupted']}; killed run "
          f"{res['killed_run_s']} s vs uninterrupted {res['uninterrupted_s']} s "
          f"({res['killed_run_s'] / max(res['uninterrupted_s'], 1e-9):.1f}x)")
    res.pop("points")
    res["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"benchmark": "reliability_kill", **res}))


if __name__ == "__main__":
    main()
