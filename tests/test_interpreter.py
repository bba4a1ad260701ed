"""The one space interpreter: instantiation and the active-decision analysis agree."""

from __future__ import annotations

import numpy as np
import pytest

from nasir.interpret import ActiveDecisions, SpaceInterpreter
from nasir.passes.sampling import UniformSampler
from nasir.spaces import get_space, list_spaces


@pytest.mark.parametrize("name", list_spaces())
def test_active_decisions_without_a_graph_equal_the_instantiated_graphs(name):
    sp = get_space(name)
    rng = np.random.default_rng(0)
    for a in [*sp.references.values(), *UniformSampler(sp).sample(rng, 8)]:
        try:
            g = sp.instantiate(a)
        except Exception:  # an invalid sample (e.g. a constraint-free width clash)
            continue
        assert ActiveDecisions(sp, a).run() == g.active_decisions == sp.active(a)


def test_a_subclass_defines_only_what_a_plain_op_is():
    """An interpreter whose values are the number of plain ops on the path so far."""

    class Depth(SpaceInterpreter[int]):
        def op(self, node, op, ins):
            return 1 + max(ins, default=0)

    sp = get_space("tiny_mnasnet")
    deep = dict(sp.reference("small"))
    depths = [lb for lb in deep if sp.decision(lb).kind == "depth"]
    shallow = {**deep, **{lb: min(sp.decision(lb).options) for lb in depths}}
    widest = {**deep, **{lb: max(sp.decision(lb).options) for lb in depths}}
    d_small = Depth(sp, sp.check(shallow)).run()
    d_large = Depth(sp, sp.check(widest)).run()
    assert d_large > d_small >= 3
    g = sp.instantiate(sp.check(widest))
    assert d_large <= len(g)
