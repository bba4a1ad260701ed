"""Fuzz every user-input kind with N hypothesis-generated inputs (default 10,000 per kind).

Every input must be accepted or refused with a ``NasirError`` carrying a location (or, for the
CLI, argparse's usage error); anything else — another exception type, an error without a
location, a hang over 20 s — is counted in ``other_exceptions`` and its first few examples
are printed. The generators live in ``tests/test_reliability_fuzz.py`` (``make test`` runs
200 per kind).

    .venv/bin/python benchmarks/reliability_fuzz.py [--examples 10000] [--kinds a,b]

Ends with one JSON line: per kind ``tried``, ``nasir_errors`` (plus ``usage_errors`` for the
CLI), ``accepted``, ``other_exceptions`` and the seconds per CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_reliability_fuzz import KINDS, fuzz


def main() -> None:
    """Run the fuzzers and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    figures: dict[str, dict[str, float]] = {}
    for kind in args.kinds.split(","):
        counts: collections.Counter[str] = collections.Counter()
        bad: dict[str, str] = {}

        def record(res: str, exc: BaseException | None, counts=counts, bad=bad) -> None:
            counts[res] += 1
            if exc is not None:
                key = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                if key not in bad and len(bad) < 8:
                    import traceback

                    tb = traceback.extract_tb(exc.__traceback__)[-1]
                    bad[key] = f"{os.path.relpath(tb.filename)}:{tb.lineno}"

        t0, c0 = time.perf_counter(), time.process_time()
        fuzz(kind, args.examples, record, raise_other=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tried = sum(counts.values())
        figures[kind] = {"tried": tried, "nasir_errors": counts["nasir_error"],
                         "usage_errors": counts["usage_error"], "accepted": counts["accepted"],
                         "other_exceptions": counts["other"], "wall_s": round(wall, 1),
                         "cpu_s": round(cpu, 1)}
        print(f"{kind:>11}: {tried} tried, {counts['nasir_error']} NasirError, "
              f"{counts['usage_error']} usage errors, {counts['accepted']} accepted, "
              f"{counts['other']} other in {wall:.0f} s ({cpu:.0f} CPU s; "
              f"{tried / max(cpu, 1e-9):.0f} inputs per CPU second)", flush=True)
        for k, where in bad.items():
            print(f"             other: {k}  [{where}]", flush=True)
    total = {"tried": sum(int(f["tried"]) for f in figures.values()),
             "other_exceptions": sum(int(f["other_exceptions"]) for f in figures.values())}
    print(json.dumps({"benchmark": "reliability_fuzz", "examples_per_kind": args.examples,
                      "kinds": figures, "total": total, "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
