"""The mixed space interpreter: every open option of each choice point, and the supernet as
its client."""

from __future__ import annotations

import numpy as np
import pytest

from nasir.interpret.mixed import MixedInterpreter
from nasir.passes.sampling import UniformSampler
from nasir.spaces import get_space, list_spaces


class Walk(MixedInterpreter[int, int]):
    """Values: plain ops on the longest path so far; counts the hooks called."""

    def __init__(self, space, fixed, **kw):
        super().__init__(space, fixed, **kw)
        self.calls: dict[str, int] = {}

    def _n(self, hook):
        self.calls[hook] = self.calls.get(hook, 0) + 1

    def op(self, node, op, ins):
        self._n("op")
        return 1 + max(ins, default=0)

    def choose(self, p, ins):
        self._n("choose")
        return max(self.branch(p, i, ins) for i in p.open)

    def repeat(self, p, x):
        self._n("repeat")
        counts = [p.options[i] for i in p.open]
        for i in range(max(counts)):
            x = self.layer(p, i, [x])
        return x

    def select(self, p, ins):
        self._n("select")
        return max(ins[j] for pick in p.picks().values() for j in pick)

    def values(self, p, ins):
        self._n("values")
        return 1 + max(ins, default=0)

    def edge_operands(self, p, ins):
        self._n("edge_operands")
        return max(ins)

    def edge(self, e, x):
        self._n("edge")
        return max(self.branch(e.choice, k, [x]) for k in e.choice.open)

    def cell_operand(self, e, x):
        self._n("cell_operand")
        return x

    def cell(self, c, ins):
        self._n("cell")
        return 1 + max(ins)


class Path(MixedInterpreter[int, int]):
    """A mixed client that follows one assignment: it counts the nodes that assignment's
    concrete graph has, reading every choice point through the mixed interpreter."""

    def __init__(self, space, a):
        super().__init__(space, {})
        self.path = a
        self.nodes = 0

    def op(self, node, op, ins):
        self.nodes += 1
        return 0

    def choose(self, p, ins):
        return self.branch(p, p.options.index(self.path[p.label]), ins)

    def repeat(self, p, x):
        for i in range(self.path[p.label]):
            x = self.layer(p, i, [x])
        return x

    def select(self, p, ins):
        pick = p.picks()[p.options.index(self.path[p.label])]
        self.nodes += len(pick) > 1  # several picks: one reduce node
        return 0

    def values(self, p, ins):
        self.nodes += 1
        return 0


@pytest.mark.parametrize("name", list_spaces())
def test_every_decision_is_reached_and_a_path_agrees_with_instantiation(name):
    sp = get_space(name)
    w = Walk(sp, {})
    assert set(w.run_used()) == {d.label for d in sp.decisions}
    assert all(w.used[d.label] == d.options for d in sp.decisions)
    rng = np.random.default_rng(0)
    for a in [*sp.references.values(), *UniformSampler(sp).sample(rng, 3)]:
        try:
            g = sp.instantiate(a)
        except Exception:  # an invalid sample (e.g. a constraint-free width clash)
            continue
        p = Path(sp, a)
        p.run()
        assert p.nodes == len(g.nodes())


def test_pinned_decisions_close_options_and_are_not_used():
    sp = get_space("tiny_mnasnet")
    d_op = next(d for d in sp.decisions if d.label == "b1_op")
    d_depth = next(d for d in sp.decisions if d.label == "b1_layers")
    w = Walk(sp, {"b1_op": d_op.options[1], "b1_layers": d_depth.options[0]})
    used = w.run_used()
    assert "b1_op" not in used and "b1_layers" not in used
    seen = {}

    class Spy(Walk):
        def choose(self, p, ins):
            seen[p.label] = (p.open, p.pinned)
            return super().choose(p, ins)

    Spy(sp, {"b1_op": d_op.options[1]}).run()
    assert seen["b1_op"] == ((1,), True)
    assert seen["b2_op"] == (tuple(range(len(d_op.options))), False)


def test_value_points_enumerate_valid_combinations_only():
    sp = get_space("tiny_mnasnet")
    found = []

    class Values(Walk):
        def values(self, p, ins):
            found.append((p.free, p.combinations(), [idx for idx, _ in p.candidates()]))
            return super().values(p, ins)

    Values(sp, {lb: 8 for lb in ("b1_filters",)}).run()
    assert found
    for free, combos, cands in found:
        assert len(cands) <= combos
        assert all(len(idx) == len(free) for idx in cands)
    assert all("b1_filters" not in free for free, _, _ in found)


def test_edges_and_cells_on_the_darts_space():
    sp = get_space("darts", layers=3)
    plain = Walk(sp, {})
    plain.run()
    edges = Walk(sp, {}, edges=True)
    edges.run()
    cells = Walk(sp, {}, cells=True)
    cells.run()
    assert "edge" not in plain.calls and plain.calls["select"] > 0
    # each block operand (input choice → op choice) is one edge
    assert edges.calls["edge"] == edges.calls["edge_operands"] == plain.calls["select"]
    # each block (two operands over the same states) is one cell node
    assert cells.calls["cell"] * 2 == cells.calls["cell_operand"] == edges.calls["edge"]
    assert set(cells.used) == set(plain.used) == {d.label for d in sp.decisions}


def test_the_supernets_logits_are_the_decisions_the_interpreter_reached_in_order():
    import torch

    from nasir.backends.torch.supernet import Supernet

    torch.set_num_threads(1)
    sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
    net = Supernet(sp, mode="darts", seed=0)
    assert list(net.decisions()) == list(Walk(sp, {}).run_used())
    pinned = {"edge_0_1": "skip_connect"}
    net2 = Supernet(sp, mode="darts", seed=0, fixed=pinned)
    assert list(net2.decisions()) == list(Walk(sp, pinned).run_used())
    assert "edge_0_1" not in net2.decisions()
