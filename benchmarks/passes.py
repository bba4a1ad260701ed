"""Throughput of the shared passes on one core, next to a plain-dict baseline.

Measures, in one run:
* NB201: sample + canonical hash per second (nasir passes) vs a plain-dict sampler that
  hashes a sorted JSON dump of the choices (no IR, no canonical form: it cannot tell
  equivalent cells apart, which is what nasir's hash is for);
* MnasNet space: sample + instantiate + verify per second vs a plain-dict builder that
  lists layer dicts and propagates shapes with integer arithmetic;
* mutations per second (MnasNet space, with the validity check) vs copying a dict and
  changing one key;
* the pass manager: ``expand-composites,canonicalize,count-macs,hash`` on a copy of the
  MnasNet-A1 graph through :class:`~nasir.passes.PassManager` (its context, fact
  bookkeeping and checks; verification off, then on) vs the same passes' ``apply`` called
  in a row on a copy.

Run: ``.venv/bin/python benchmarks/passes.py`` (``--seconds`` per measurement).
Last line: JSON ``{"nb201_sample_hash_per_s", "mnasnet_instantiate_verify_per_s",
"mutations_per_s", "pipeline_per_s", "pass_manager_vs_direct", ...}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from nasir.passes.base import parse_pipeline
from nasir.passes.hashing import assignment_hash
from nasir.passes.mutation import mutate
from nasir.passes.sampling import UniformSampler
from nasir.passes.verify import verify
from nasir.spaces import get_space


def rate(fn, seconds: float) -> float:
    """Calls per CPU second of this process (robust to other load on the machine)."""
    fn()
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        fn()
        n += 1
    return n / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()

    nb = get_space("nb201")
    rng = np.random.default_rng(0)
    sampler = UniformSampler(nb)
    batch = 256

    def nb_nasir() -> None:
        for a in sampler.sample(rng, batch):
            assignment_hash(nb, a)

    pyrng = random.Random(0)
    labels = [(d.label, d.options) for d in nb.decisions]

    def nb_dict() -> None:
        for _ in range(batch):
            a = {lb: pyrng.choice(opts) for lb, opts in labels}
            hashlib.blake2b(json.dumps(a, sort_keys=True).encode(), digest_size=16).hexdigest()

    nb_rate = rate(nb_nasir, args.seconds) * batch
    nb_base = rate(nb_dict, args.seconds) * batch

    mn = get_space("mnasnet")
    msampler = UniformSampler(mn)

    def mn_nasir() -> None:
        a = msampler.sample(rng, 1)[0]
        verify(mn.instantiate(a))

    from nasir.spaces.mnasnet import FILTERS, LAYERS, STRIDES

    def mn_dict() -> None:
        layers, c, h = [], 32, 112
        for b in range(7):
            f = pyrng.choice(FILTERS[b])
            k = pyrng.choice((3, 5))
            e = pyrng.choice((1, 3, 6))
            for i in range(pyrng.choice(LAYERS[b])):
                s = STRIDES[b] if i == 0 else 1
                h = (h + 2 * (k // 2) - k) // s + 1
                layers.append({"in": c, "out": f, "k": k, "e": e, "s": s, "h": h})
                c = f
        assert layers

    mn_rate = rate(mn_nasir, args.seconds)
    mn_base = rate(mn_dict, args.seconds)

    state = {"a": mn.reference("mnasnet_a1")}

    def mut_nasir() -> None:
        state["a"] = mutate(mn, state["a"], rng)

    base_a = dict(mn.reference("mnasnet_a1"))
    dec = [(d.label, d.options) for d in mn.decisions]

    def mut_dict() -> None:
        nonlocal base_a
        lb, opts = pyrng.choice(dec)
        base_a = dict(base_a)
        base_a[lb] = pyrng.choice(opts)

    mut_rate = rate(mut_nasir, args.seconds)
    mut_base = rate(mut_dict, args.seconds)

    g0 = mn.instantiate(mn.reference("mnasnet_a1"))
    verify(g0)
    pipeline = "expand-composites,canonicalize,count-macs,hash"
    pm_plain = parse_pipeline(pipeline, verify_each=False)
    pm_verify = parse_pipeline(pipeline)

    def direct() -> None:
        g = g0.copy()
        for p in pm_plain.passes:
            p.apply(g)

    pm_rate = rate(lambda: pm_plain.run(g0.copy()), args.seconds)
    direct_rate = rate(direct, args.seconds)
    pmv_rate = rate(lambda: pm_verify.run(g0.copy()), args.seconds)

    print(f"NB201 sample+hash:            {nb_rate:12,.0f}/s   plain dict {nb_base:12,.0f}/s "
          f"(nasir/dict {nb_rate / nb_base:.3f})")
    print(f"MnasNet instantiate+verify:   {mn_rate:12,.0f}/s   plain dict {mn_base:12,.0f}/s "
          f"(nasir/dict {mn_rate / mn_base:.3f})")
    print(f"MnasNet mutations (checked):  {mut_rate:12,.0f}/s   plain dict {mut_base:12,.0f}/s "
          f"(nasir/dict {mut_rate / mut_base:.3f})")
    print(f"Pipeline, pass manager:       {pm_rate:12,.1f}/s   direct     {direct_rate:12,.1f}/s "
          f"(manager/direct {pm_rate / direct_rate:.3f}; verifying each: {pmv_rate:,.1f}/s)")
    print(json.dumps({
        "nb201_sample_hash_per_s": round(nb_rate, 1),
        "mnasnet_instantiate_verify_per_s": round(mn_rate, 1),
        "mutations_per_s": round(mut_rate, 1),
        "nb201_vs_dict": round(nb_rate / nb_base, 4),
        "mnasnet_vs_dict": round(mn_rate / mn_base, 4),
        "mutations_vs_dict": round(mut_rate / mut_base, 4),
        "pipeline_per_s": round(pm_rate, 1),
        "pipeline_verify_each_per_s": round(pmv_rate, 1),
        "pass_manager_vs_direct": round(pm_rate / direct_rate, 4),
    }))


if __name__ == "__main__":
    main()
