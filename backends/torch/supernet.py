"""Weight-sharing supernets: one network for a whole search space.

:class:`Supernet` lowers a :class:`~nasir.space.Space` with its choice points. Each node of
the space body becomes a step; choice points become mixed ops whose candidates own their
weights, shared by every architecture that picks them:

* ``choose`` (op choice): one sub-network per region;
* a node with ``$label`` attributes (value choice): one candidate per combination of its
  labels' values (candidates that do not verify are left out);
* ``repeat`` (depth): the deepest stack; shallower choices exit early;
* ``select`` (input choice): every pick of the operands, reduced like the space says;
  with ``per_input_ops=True`` a select feeding one op choice (a cell block's operand)
  becomes one mixed edge per candidate input, each with its own op candidates (DARTS,
  ENAS), so inputs of different resolutions need no pinning; with ``edge_alphas=True`` a
  block that sums two such operands over the same states becomes DARTS' cell node: one
  mixed op per incoming edge, the node the sum over every edge, with one logit per
  (edge, op) instead of input logits × op logits (:class:`CellEdges`);
* a projected cell output (``cell_output`` with ``project``, ENAS-micro): one 1×1
  projection over all states, sliced to the path's loose ends (single-path modes).

Architecture parameters (one logit vector per decision label, shared by every node using
the label; with ``edge_alphas`` one ``edges × ops`` matrix per cell node, shared by the
cells of its kind) weight the candidates according to ``mode``:

``darts``      softmax-weighted sum of all candidates (DARTS);
``gumbel``     Gumbel-softmax weighted sum with temperature ``tau`` (FBNet);
``gumbel_hard`` straight-through Gumbel-softmax, one path per forward (GDAS, Dong &
               Yang 2019): per decision the option ``k`` of largest Gumbel-softmax sample
               ``y = softmax((α + g) / τ)`` runs (Gumbel-max: drawn from
               ``softmax(α)``), passed through the gate ``1 + y_k − stop_grad(y_k)``
               (value 1), so only it runs and keeps activations, and the logits get
               ``∂L/∂α = ⟨∂L/∂out, o_k⟩ · ∂y_k/∂α`` — FBNet's Gumbel relaxation at the
               cost of a single path;
``binarized``  one path sampled from the softmax per forward; only it runs, so only its
               activations are kept (ProxylessNAS). When the logits require grad, the
               sampled output passes a straight-through gate ``1 + p - stop_grad(p)`` so
               the logits get a single-path gradient estimate; with ``binary_paths=2``
               (the paper's estimator) each decision samples two options from the
               softmax, the active one from the softmax of their two logits, the other
               runs without grad, and the two logits get
               ``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j(δ_ij − p_i)`` over the pair, ``∂L/∂g_j`` the
               gradient of the binary gate of option ``j`` (:attr:`Supernet.last_pairs`
               names the pairs, for the paper's rescaling of the updated logits);
``single``     the path set by :meth:`Supernet.set_path` (an external sampler: ENAS, SPOS).

Mixed modes skip work that cannot change the output or a gradient: ``zero`` candidates
(``w · 0``; ``∂L/∂w = ⟨∂L/∂out, 0⟩ = 0``), candidates whose mixing weight is exactly 0 (a
logit at ``-inf``: pinned off, as DARTS-PT's selection does), and repeated weightless ops
on the same operand (every edge leaving a cell state pools it once). Results equal running
them up to floating-point summation order.

Every value in the body must have one type whatever is chosen (mixing sums outputs):
decisions that change a type (channel counts, a depth whose first layer strides) must be
pinned with ``fixed={label: value}``; the error names them. :meth:`Supernet.child` extracts
a standalone lowered module for an assignment with the supernet's weights; its output
equals the supernet's for the same path.

>>> import torch
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
>>> net = Supernet(sp, mode="single", seed=0).eval()
>>> a = sp.reference("best_cifar10")
>>> net.set_path(a)
>>> child = net.child(a).eval()
>>> x = torch.randn(2, 3, 8, 8)
>>> torch.equal(net(x), child(x))
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.lowering import _seed_of, load_weights, lower, prepare
from nasir.errors import AssignmentError, BackendError, NasirError
from nasir.graph import Graph, Node
from nasir.ops import AddOp, ConcatOp, InputOp, MulOp, Op, RepeatOp, has_refs, resolve_refs
from nasir.space import Space
from nasir.types import TensorType

__all__ = ["MODES", "ONE_PATH", "CellEdges", "Supernet"]

MODES = ("darts", "gumbel", "gumbel_hard", "binarized", "single")
#: modes that run one path per forward (the others mix every candidate)
ONE_PATH = ("single", "binarized", "gumbel_hard")
#: most candidates a value choice may enumerate (one lowered module each)
MAX_VALUE_CANDIDATES = 4096


def _key(label: str) -> str:
    return label.replace(".", "__")


#: options that output zeros: DARTS' derivation never keeps them
_ZERO_OPTIONS = ("none", "zero")


@dataclass(frozen=True)
class CellEdges:
    """A cell node with one logit per (incoming edge, op), as DARTS builds it.

    The node sums two operands, each an input decision (``in_labels``: which earlier
    state) and an op decision (``op_labels``) over the same ``inputs`` and ``ops``. DARTS'
    supernet gives every incoming edge (every state in ``inputs``) its own mixed op and
    sums them all: the logits are one ``len(inputs) × len(ops)`` matrix (``key`` in
    :attr:`Supernet.alphas`), softmax over the ops of each edge.

    >>> c = CellEdges("n", ("n_in_a", "n_in_b"), ("n_op_a", "n_op_b"), (0, 1, 2),
    ...               ("none", "skip", "conv"))
    >>> c.derive([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    {'n_in_a': 2, 'n_op_a': 'conv', 'n_in_b': 1, 'n_op_b': 'skip'}
    """

    key: str
    in_labels: tuple[str, str]
    op_labels: tuple[str, str]
    inputs: tuple
    ops: tuple

    @property
    def labels(self) -> tuple[str, ...]:
        """The four decisions the node stands for."""
        return (*self.in_labels, *self.op_labels)

    def derive(self, weights: Sequence[Sequence[float]]) -> dict[str, Any]:
        """DARTS' derivation (``genotype()._parse`` of quark0/darts): the node keeps its two
        incoming edges of largest strongest non-zero op weight (stronger first; ties: the
        earlier state), each with that op. ``none``/``zero`` is never picked while another
        op exists. ``weights``: per edge, the softmax over the ops."""
        rows = [[float(v) for v in r] for r in weights]
        live = [k for k, o in enumerate(self.ops) if not (isinstance(o, str)
                                                            and o in _ZERO_OPTIONS)]
        live = live or list(range(len(self.ops)))

        def best(j: int) -> int:
            return max(live, key=lambda k: (rows[j][k], -k))

        order = sorted(range(len(rows)), key=lambda j: (-rows[j][best(j)], j))
        kept = (order * 2)[:2]  # one candidate input: both operands read it
        out: dict[str, Any] = {}
        for in_lb, op_lb, j in zip(self.in_labels, self.op_labels, kept):
            out[in_lb] = self.inputs[j]
            out[op_lb] = self.ops[best(j)]
        return out


class _Gate(torch.autograd.Function):
    """Forward: the output unchanged. Backward: d/dg of ``g · out`` at g = 1."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(out)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad, (grad * out).sum().reshape(())


class _Ctx:
    """Per-forward state: mixing weights (darts/gumbel) or chosen indices."""

    def __init__(self, net: Supernet) -> None:
        self.net = net
        self.mode = net.mode
        self.weights: dict[str, torch.Tensor] = {}
        self.index: dict[str, int] = {}
        self.probs: dict[str, torch.Tensor] = {}
        #: binarized, two-path estimator: label → (option a, option b, softmax over a, b)
        self.pairs: dict[str, tuple[int, int, torch.Tensor]] = {}
        #: mixed modes: outputs of pure (weightless, deterministic) ops, by op signature
        #: and operands — the same pool of one state in every edge leaving it runs once
        self.memo: dict[tuple, tuple[tuple, torch.Tensor]] | None = (
            {} if self.mode in ("darts", "gumbel") else None)
        #: darts/gumbel: label → indices of options whose mixing weight is exactly 0
        self.dead: dict[str, frozenset[int]] = {}
        alphas = net.alphas
        sampled = self.mode in ("gumbel_hard", "binarized")
        #: a sampled path passes the straight-through gate when the logits train
        self.gate = sampled and torch.is_grad_enabled() and any(
            p.requires_grad for p in alphas.parameters())
        #: darts/gumbel with per-edge logits: cell key → (edge, op) pairs of weight 0
        self.dead_edges: dict[str, frozenset[tuple[int, ...]]] = {}
        if self.mode in ("darts", "gumbel"):
            def mix(name: str, k: str) -> torch.Tensor:
                a = alphas[k]
                w = (F.softmax(a, -1) if self.mode == "darts"
                     else F.gumbel_softmax(a, tau=net.tau, hard=False))
                self.weights[name] = w
                if self.mode == "gumbel":
                    net.last_mask[name] = w
                return w

            for label, k in net._label_keys.items():
                w = mix(label, k)
                dead = frozenset(i for i, z in enumerate((w == 0).tolist()) if z)
                if dead:
                    self.dead[label] = dead
            for cell, k in net._edge_keys.items():
                w = mix(cell, k)
                zero = (w == 0).nonzero().tolist()
                if zero:
                    self.dead_edges[cell] = frozenset(tuple(z) for z in zero)
        elif self.mode == "gumbel_hard":
            for label, k in net._label_keys.items():
                y = F.gumbel_softmax(alphas[k], tau=net.tau, hard=False)
                self.probs[label] = y  # the gate's straight-through term
                i = self.index[label] = int(y.detach().argmax())
                net.last_mask[label] = F.one_hot(torch.tensor(i), y.numel()).to(y) \
                    * (1 + y[i] - y[i].detach())
        elif self.mode == "binarized":
            two = self.gate and net.binary_paths == 2
            for label, k in net._label_keys.items():
                p = F.softmax(alphas[k], -1)
                self.probs[label] = p
                if two and p.numel() > 1:
                    ia, ib = (int(i) for i in torch.multinomial(p.detach(), 2))
                    pt = F.softmax(alphas[k][[ia, ib]], -1)
                    self.pairs[label] = (ia, ib, pt)
                    self.index[label] = ia if float(torch.rand(())) < pt[0].item() else ib
                else:
                    self.index[label] = int(torch.multinomial(p.detach(), 1))
            net.last_pairs = {lb: (a, b) for lb, (a, b, _) in self.pairs.items()}
        else:
            self.index = net._path_index
        if sampled:
            net.last_path = {lb: net._options[lb][i] for lb, i in self.index.items()}

    def pick(self, label: str) -> int:
        try:
            return self.index[label]
        except KeyError:
            raise AssignmentError(
                f"the supernet path leaves out decision {label!r}",
                hint="call set_path with a full assignment (single mode)") from None

    def _pair_terms(self, labels: tuple[str, ...], key: tuple[int, ...],
                    cands: dict[tuple[int, ...], Any], out: torch.Tensor) -> torch.Tensor:
        """Zero in the forward; its gradient gives each sampled pair's softmax ``p_j``
        the binary-gate gradient ``∂L/∂g_j = ⟨∂L/∂out, o_j⟩`` (ProxylessNAS, two paths).
        The inactive option's output ``o_j`` runs without grad (its weights get none)."""
        total = torch.zeros(())
        for pos, lb in enumerate(labels):
            if lb not in self.pairs:
                continue
            ia, ib, pt = self.pairs[lb]
            for j, idx in enumerate((ia, ib)):
                if idx == key[pos]:
                    o = out.detach()
                else:
                    alt = cands.get((*key[:pos], idx, *key[pos + 1:]))
                    if alt is None:  # that combination does not verify: no gate term
                        continue
                    with torch.no_grad():
                        o = alt()
                total = total + (pt[j] - pt[j].detach()) * o
        return total

    def mix(self, labels: tuple[str, ...], cands: dict[tuple[int, ...], Any],
            zeros: frozenset[tuple[int, ...]] = frozenset()) -> torch.Tensor:
        """Combine candidate thunks keyed by option-index tuples of ``labels``;
        ``zeros``: the keys whose candidate outputs all-zeros (a ``zero`` op)."""
        if self.mode in ONE_PATH:
            key = tuple(self.pick(lb) for lb in labels)
            fn = cands.get(key)
            if fn is None:
                raise AssignmentError(f"no valid candidate for {dict(zip(labels, key))}",
                                      hint="this combination of values does not verify")
            out = fn()
            if self.pairs:
                return out + self._pair_terms(labels, key, cands, out)
            if self.gate:
                g = torch.ones(())
                for lb, i in zip(labels, key):
                    p = self.probs[lb][i]
                    g = g * (1 + p - p.detach())
                out = _Gate.apply(out, g)
            return out
        total: torch.Tensor | None = None
        dead = [self.dead.get(lb, frozenset()) for lb in labels]
        # Candidates that add exactly 0 to the output and to every gradient are not run:
        # a ``zero`` op (w·0 = 0, ∂L/∂w = ⟨∂L/∂out, 0⟩ = 0) and a candidate whose weight
        # is exactly 0 (a logit at -inf: an option pinned off or removed, as DARTS-PT's
        # selection sets them; ∂softmax_i/∂α = 0 where softmax_i = 0).
        for key, fn in _live(cands, lambda key: key in zeros or any(
                i in d for i, d in zip(key, dead))).items():
            w = self.weights[labels[0]][key[0]]
            for lb, i in zip(labels[1:], key[1:]):
                w = w * self.weights[lb][i]
            term = fn() * w
            total = term if total is None else total + term
        assert total is not None
        return total

    def mix_edges(self, cell: str, cands: dict[tuple[int, ...], Any],
                  zeros: frozenset[tuple[int, ...]]) -> torch.Tensor:
        """A DARTS cell node: the sum over every (edge, op) candidate of its output times
        the softmax weight of that op on that edge (the same work skipping as :meth:`mix`)."""
        w = self.weights[cell]
        dead = self.dead_edges.get(cell, frozenset())
        total: torch.Tensor | None = None
        for key, fn in _live(cands, lambda key: key in zeros or key in dead).items():
            term = fn() * w[key]
            total = term if total is None else total + term
        assert total is not None
        return total


def _live(cands: dict[tuple[int, ...], Any], skip: Any) -> dict[tuple[int, ...], Any]:
    """The candidates that ``skip(key)`` does not leave out, or, if it leaves out all of
    them, the first one (it runs for the output's shape)."""
    live = {key: fn for key, fn in cands.items() if not skip(key)}
    if not live:
        key = next(iter(cands))
        live = {key: cands[key]}
    return live


class _Emit:
    """Graph-building state: the concrete (or mixed) graph and its weight sources."""

    def __init__(self, path: Mapping[str, int] | None) -> None:
        self.g = Graph("child")
        self.path = path
        self.sources: dict[str, nn.Module] = {}
        #: mixed graph: pure ops by signature and operands (see ``_Fixed``)
        self.memo: dict[tuple, Node] = {}

    def add(self, op: Op, ins: list[Node], source: nn.Module | None = None) -> Node:
        n = self.g.add(op, ins)
        if source is not None:
            self.sources[n.name] = source
        return n

    def mix(self, labels: tuple[str, ...], cands: dict[tuple[int, ...], Any],
            zeros: frozenset[tuple[int, ...]] = frozenset()) -> Node:
        if self.path is not None:
            key = tuple(self.path[lb] for lb in labels)
            if key not in cands:
                raise AssignmentError(f"no valid candidate for {dict(zip(labels, key))}")
            out = cands[key]()
            # memory model: binarized mode's gate saves this output when the logits train
            out.meta = {**(out.meta or {}), "mix_out": True}
            return out
        # in _Ctx.mix's order (candidate, w·o, running sum), so that the memory model
        # sees the real lifetimes. w·o makes a new tensor and keeps o for backward when w
        # requires grad (logits trained): a mul of o by itself, tagged for the model
        total: Node | None = None
        # _Ctx.mix does not run zero candidates either
        for fn in _live(cands, lambda key: key in zeros).values():
            o = fn()
            p = self.g.add(MulOp(), [o, o])
            p.meta = {"mix_weight": True}
            total = p if total is None else self.g.add(AddOp(), [total, p])
        assert total is not None
        return total


def _tiny(op: Op, in_types: list[TensorType]) -> Graph:
    g = Graph("cand")
    ins = [g.add(InputOp(shape=t.shape, dtype=t.dtype), name=f"in{i}")
           for i, t in enumerate(in_types)]
    g.set_output(g.add(op, ins, name="op"))
    return g


class _Builder:
    def __init__(self, space: Space, fixed: Mapping[str, Any], seed: int,
                 per_input: bool = False, edge_alphas: bool = False) -> None:
        self.space = space
        self.fixed = dict(fixed)
        self.seed = seed
        self.per_input = per_input or edge_alphas
        self.edge_alphas = edge_alphas
        self.labels: dict[str, tuple] = {}
        #: cell nodes with per-edge logits, by key (shared by the cells of one kind)
        self.cells: dict[str, CellEdges] = {}
        self.count = 0

    def cell(self, in_labels: tuple[str, str], op_labels: tuple[str, str]) -> CellEdges:
        """The :class:`CellEdges` of a node (made once; cells of one kind share it). Its
        key is the labels' common stem (``normal_b2``), else the labels joined."""
        for c in self.cells.values():
            if c.in_labels == in_labels and c.op_labels == op_labels:
                return c
        labels = (*in_labels, *op_labels)
        stem = ""
        for chars in zip(*labels):  # the labels' common leading characters
            if len(set(chars)) > 1:
                break
            stem += chars[0]
        stem = stem.rstrip("_.")
        key = _key(stem) if stem else "__".join(_key(lb) for lb in labels)
        while key in self.cells or key in {_key(d.label) for d in self.space.decisions}:
            key += "_edges"
        for lb in labels:
            self.use(lb)
        d = self.space.decision
        c = CellEdges(key, in_labels, op_labels, d(in_labels[0]).options,
                      d(op_labels[0]).options)
        self.cells[key] = c
        return c

    def use(self, label: str) -> None:
        if label not in self.fixed:
            self.labels[label] = self.space.decision(label).options

    def lower_op(self, op: Op, in_types: list[TensorType]) -> tuple[nn.Module, TensorType]:
        g = _tiny(op, in_types)
        self.count += 1
        m = lower(g, seed=_seed_of(self.seed, self.count))
        out = prepare(g).output.type
        return m, out  # type: ignore[return-value]

    def uniform(self, types: list[TensorType], what: str, label: str, loc: Any) -> TensorType:
        if len(set(types)) > 1:
            shown = ", ".join(str(t) for t in dict.fromkeys(types))
            raise BackendError(
                f"decision {label} changes the type of {what} ({shown}); a supernet needs "
                "one type per value",
                where=f"decision {label}", loc=loc,
                hint=f"pin it: Supernet(space, fixed={{{label!r}: ...}})")
        if not types:
            raise BackendError(f"no option of decision {label} gives a valid network here",
                               loc=loc)
        return types[0]


class _Region(nn.Module):
    """Steps of one region graph, run on its operands."""

    def __init__(self, b: _Builder, r: Graph, in_types: list[TensorType]) -> None:
        super().__init__()
        self.steps: list[tuple[str, int, tuple[int, ...], str]] = []
        self.mods = nn.ModuleDict()
        types: list[Any] = []
        nodes = r.nodes()
        pos = {n: k for k, n in enumerate(nodes)}
        edges = _edge_pairs(b, r) if b.per_input else {}
        cells = _cell_nodes(b, r, edges) if b.edge_alphas else {}
        in_cell = {c for parts in cells.values() for c in parts[1::2]}
        for n in nodes:
            ins = tuple(pos[i] for i in n.inputs)
            its = [types[i] for i in ins]
            key = "n" + "".join(c if c.isalnum() else "_" for c in n.name)
            op = n.op
            if n in edges.values():  # a select feeding one choose: its operands pass on
                self.steps.append(("operands", 0, ins, key))
                types.append(tuple(its))
                continue
            if n in in_cell:  # an operand of a cell node: the node mixes every edge
                self.steps.append(("pass", 0, ins, key))
                types.append(its[0])
                continue
            if n in cells:
                step_c = _CellNode(b, cells[n], list(its[0]))
                self.mods[key] = step_c
                self.steps.append(("step", 0, ins, key))
                types.append(step_c.out_type)
                continue
            if n in edges:
                step_e = _EdgeChoice(b, edges[n], n, list(its[0]))
                self.mods[key] = step_e
                self.steps.append(("step", 0, ins, key))
                types.append(step_e.out_type)
                continue
            if op.name == "input":
                self.steps.append(("input", 0, ins, key))
                types.append(op.infer(()))
                continue
            if op.name == "arg":
                self.steps.append(("arg", op.index, ins, key))  # type: ignore[attr-defined]
                types.append(in_types[op.index])  # type: ignore[attr-defined]
                continue
            if op.name == "choose":
                step: Any = _OpChoice(b, n, its)
            elif op.name == "repeat":
                step = _Repeat(b, n, its)
            elif op.name == "select":
                step = _InputChoice(b, n, its)
            elif op.name == "cell_output" and has_refs(op) and bool(getattr(op, "project", False)):
                step = _CellOutput(b, n, its)
            elif has_refs(op):
                step = _ValueChoice(b, n, its)
            else:
                step = _Fixed(b, op, its)
            self.mods[key] = step
            self.steps.append(("step", 0, ins, key))
            types.append(step.out_type)
        self.out = pos[r.output]
        self.out_type = types[self.out]
        #: the region's value is all zeros (its output is a ``zero`` op)
        self.zero = r.output.op.name == "zero"
        # drop each value after its last use, as fx's generated code does: holding every
        # intermediate until the region ends would keep tensors autograd does not need
        last: dict[int, int] = {}
        for k, (_, _, ins, _) in enumerate(self.steps):
            for i in ins:
                last[i] = k
        self.frees: list[tuple[int, ...]] = [
            tuple(i for i, k2 in last.items() if k2 == k and i != self.out)
            for k in range(len(self.steps))]

    def run(self, ctx: Any, args: list[Any], emit: bool = False) -> Any:
        vals: list[Any] = []
        for k, (kind, extra, pos, key) in enumerate(self.steps):
            if kind == "arg":
                vals.append(args[extra])
            elif kind == "input":
                vals.append(args[0])
            elif kind == "operands":
                vals.append([vals[i] for i in pos])
            elif kind == "pass":
                vals.append(vals[pos[0]])
            else:
                m = self.mods[key]
                ins = [vals[i] for i in pos]
                vals.append(m.emit(ctx, ins) if emit else m(ctx, ins))  # type: ignore[operator]
                del ins
            for i in self.frees[k]:
                vals[i] = None
        return vals[self.out]


class _Fixed(nn.Module):
    def __init__(self, b: _Builder, op: Op, its: list[TensorType]) -> None:
        super().__init__()
        self.op = op
        self.net, self.out_type = b.lower_op(op, its)
        #: no weights, no state, no randomness: equal operands give an equal output
        self.pure = (not any(True for _ in self.net.parameters())
                     and not any(True for _ in self.net.buffers())
                     and not any("drop" in type(m).__name__.lower()
                                 for m in self.net.modules()))

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        memo = ctx.memo
        if memo is None or not self.pure:
            return self.net(*ins)
        key = (self.op.signature(), *(id(t) for t in ins))
        hit = memo.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], ins)):
            return hit[1]
        out = self.net(*ins)
        memo[key] = (tuple(ins), out)  # the operands stay referenced: ids stay unique
        return out

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if e.path is None and self.pure:  # the mixed graph shares them as _Ctx does
            key = (self.op.signature(), *(n.name for n in ins))
            if key not in e.memo:
                e.memo[key] = e.add(self.op, ins, self.net)
            return e.memo[key]
        return e.add(self.op, ins, self.net)


class _ValueChoice(nn.Module):
    def __init__(self, b: _Builder, n: Node, its: list[TensorType]) -> None:
        super().__init__()
        labels = []
        for v in n.op.attrs().values():
            for x in v if isinstance(v, tuple) else (v,):
                lb = getattr(x, "label", None)
                if isinstance(lb, str) and lb not in labels:
                    labels.append(lb)
        free = [lb for lb in labels if lb not in b.fixed]
        for lb in free:
            b.use(lb)
        self.labels = tuple(free)
        self.cands = nn.ModuleDict()
        self.ops: dict[str, Op] = {}
        types = []
        opts = [b.space.decision(lb).options for lb in free]
        combos = math.prod(len(o) for o in opts)
        if combos > MAX_VALUE_CANDIDATES:
            raise BackendError(
                f"%{n.name} ({n.op.name}) depends on {len(free)} decisions with {combos:,} "
                f"value combinations; a supernet builds one candidate per combination "
                f"(at most {MAX_VALUE_CANDIDATES:,})", loc=n.loc,
                where=f"decisions {', '.join(free[:4])}{', …' if len(free) > 4 else ''}",
                hint="pin some of them with fixed={...} (e.g. a NASNet cell's output, the "
                     "concatenated loose ends, depends on every input choice of its cell)")
        for idx in itertools.product(*(range(len(o)) for o in opts)):
            values = {lb: b.fixed[lb] for lb in labels if lb in b.fixed}
            values.update({lb: o[i] for lb, o, i in zip(free, opts, idx)})
            try:
                op = resolve_refs(n.op, values)
                m, t = b.lower_op(op, its)
            except NasirError:
                continue
            k = "c" + "_".join(map(str, idx))
            self.cands[k] = m
            self.ops[k] = op
            types.append(t)
        self.out_type = b.uniform(types, f"%{n.name} ({n.op.name})",
                                  free[0] if free else "?", n.loc)

    def _thunks(self, ins: list[Any], emit: _Emit | None) -> dict[tuple[int, ...], Any]:
        out: dict[tuple[int, ...], Any] = {}
        for k, m in self.cands.items():
            idx = tuple(int(i) for i in k[1:].split("_")) if len(k) > 1 else ()
            if emit is None:
                out[idx] = lambda m=m: m(*ins)
            else:
                out[idx] = lambda m=m, k=k: emit.add(self.ops[k], ins, m)
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        th = self._thunks(ins, None)
        return th[()]() if not self.labels else ctx.mix(self.labels, th)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        th = self._thunks(ins, e)
        return th[()]() if not self.labels else e.mix(self.labels, th)


class _OpChoice(nn.Module):
    def __init__(self, b: _Builder, n: Node, its: list[TensorType]) -> None:
        super().__init__()
        label = n.op.label  # type: ignore[attr-defined]
        options = b.space.decision(label).options
        self.fixed = label in b.fixed
        if not self.fixed:
            b.use(label)
        self.label = label
        self.regions = nn.ModuleDict()
        self.index: dict[str, int] = {}
        types = []
        for i, o in enumerate(options):
            if self.fixed and o != b.fixed[label]:
                continue
            r = _Region(b, n.regions[o], its)  # type: ignore[index]
            self.regions[f"o{i}"] = r
            self.index[f"o{i}"] = i
            types.append(r.out_type)
        self.out_type = b.uniform(types, f"%{n.name} (choose)", label, n.loc)
        self.zeros = frozenset((self.index[k],) for k, r in self.regions.items() if r.zero)

    def _only(self) -> Any:
        return next(iter(self.regions.values()))

    def _thunks(self, ctx: Any, ins: list[Any], emit: bool) -> dict[tuple[int, ...], Any]:
        return {(self.index[k],): (lambda r=r: r.run(ctx, ins, emit))
                for k, r in self.regions.items()}

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if self.fixed:
            return self._only().run(ctx, ins)
        return ctx.mix((self.label,), self._thunks(ctx, ins, False), self.zeros)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if self.fixed:
            return self._only().run(e, ins, True)
        return e.mix((self.label,), self._thunks(e, ins, True), self.zeros)


class _Repeat(nn.Module):
    def __init__(self, b: _Builder, n: Node, its: list[TensorType]) -> None:
        super().__init__()
        label = n.op.label  # type: ignore[attr-defined]
        counts = b.space.decision(label).options
        self.label = label
        self.fixed = label in b.fixed
        if self.fixed:
            counts = (b.fixed[label],)
        else:
            b.use(label)
        self.counts = tuple(counts)
        all_counts = b.space.decision(label).options
        self.count_index = {c: all_counts.index(c) for c in counts}
        regions = n.regions or {}
        self.layers = nn.ModuleList()
        types = {0: its[0]}
        t = its[0]
        for i in range(max(counts)):
            r = _Region(b, RepeatOp.region_for(regions, i), [t])
            self.layers.append(r)
            t = r.out_type
            types[i + 1] = t
        self.out_type = b.uniform([types[c] for c in counts], f"%{n.name} (repeat)", label,
                                  n.loc)

    def _outs(self, ctx: Any, x: Any, emit: bool, upto: int) -> dict[int, Any]:
        outs = {0: x}
        for i in range(upto):
            x = self.layers[i].run(ctx, [x], emit)  # type: ignore[operator]
            outs[i + 1] = x
        return outs

    def _go(self, ctx: Any, x: Any, emit: bool) -> Any:
        if self.fixed:
            return self._outs(ctx, x, emit, self.counts[0])[self.counts[0]]
        one = ctx.path is not None if emit else ctx.mode in ONE_PATH
        if one:
            idx = ctx.path[self.label] if emit else ctx.pick(self.label)
            count = self._count_of(idx)
            outs = self._outs(ctx, x, emit, count)
            return ctx.mix((self.label,), {(idx,): lambda: outs[count]})
        outs = self._outs(ctx, x, emit, max(self.counts))
        return ctx.mix((self.label,), {(self.count_index[c],): (lambda c=c: outs[c])
                                       for c in self.counts})

    def _count_of(self, idx: int) -> int:
        for c, i in self.count_index.items():
            if i == idx:
                return c
        raise AssignmentError(f"depth option #{idx} of {self.label} is not available")

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        return self._go(ctx, ins[0], False)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        return self._go(e, ins[0], True)


class _InputChoice(nn.Module):
    def __init__(self, b: _Builder, n: Node, its: list[TensorType]) -> None:
        super().__init__()
        label = n.op.label  # type: ignore[attr-defined]
        self.label = label
        self.reduce = n.op.reduce  # type: ignore[attr-defined]
        options = b.space.decision(label).options
        self.fixed = label in b.fixed
        if not self.fixed:
            b.use(label)
        self.picks = {i: ((o,) if isinstance(o, int) else tuple(o))
                      for i, o in enumerate(options)
                      if not self.fixed or o == b.fixed[label]}
        types = []
        for pick in self.picks.values():
            ts = [its[j] for j in pick]
            types.append(ts[0] if len(ts) == 1 or self.reduce == "add" else
                         ConcatOp().infer(tuple(ts)))
        self.out_type = b.uniform(types, f"%{n.name} (select)", label, n.loc)

    def _combine(self, ins: list[Any], pick: tuple[int, ...], e: _Emit | None) -> Any:
        chosen = [ins[j] for j in pick]
        if len(chosen) == 1:
            return chosen[0]
        if e is not None:
            return e.add(AddOp() if self.reduce == "add" else ConcatOp(), chosen)
        if self.reduce == "add":
            out = chosen[0]
            for c in chosen[1:]:
                out = out + c
            return out
        return torch.cat(chosen, 1)

    def _thunks(self, ins: list[Any], e: _Emit | None) -> dict[tuple[int, ...], Any]:
        return {(i,): (lambda p=p: self._combine(ins, p, e)) for i, p in self.picks.items()}

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if self.fixed:
            return self._combine(ins, next(iter(self.picks.values())), None)
        return ctx.mix((self.label,), self._thunks(ins, None))

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if self.fixed:
            return self._combine(ins, next(iter(self.picks.values())), e)
        return e.mix((self.label,), self._thunks(ins, e))


def _edge_pairs(b: _Builder, r: Graph) -> dict[Node, Node]:
    """``choose`` node → the ``select`` node it alone consumes, where the select picks a
    single operand (a cell block's input and op decisions: one mixed edge per input)."""
    users: dict[Node, int] = {}
    for n in r.nodes():
        for i in n.inputs:
            users[i] = users.get(i, 0) + 1
    out: dict[Node, Node] = {}
    for n in r.nodes():
        if n.op.name != "choose" or len(n.inputs) != 1:
            continue
        s = n.inputs[0]
        if s.op.name != "select" or users.get(s, 0) != 1 or s is r.output:
            continue
        opts = b.space.decision(s.op.label).options  # type: ignore[attr-defined]
        if all(isinstance(o, int) for o in opts):
            out[n] = s
    return out


class _EdgeChoice(nn.Module):
    """A cell block operand as DARTS/ENAS build it: the op choice applied to every
    candidate input with weights of its own (one mixed edge per input), mixed over
    (input, op) by both decisions. Inputs of different resolutions (a reduction cell's
    cell inputs and its intermediate states) are fine: each edge's op is lowered for its
    input's type, and only the outputs must agree."""

    def __init__(self, b: _Builder, sel: Node, ch: Node, its: list[TensorType]) -> None:
        super().__init__()
        self.in_label = sel.op.label  # type: ignore[attr-defined]
        self.op_label = ch.op.label  # type: ignore[attr-defined]
        in_opts = b.space.decision(self.in_label).options
        op_opts = b.space.decision(self.op_label).options
        labels = []
        for lb in (self.in_label, self.op_label):
            if lb not in b.fixed:
                b.use(lb)
                labels.append(lb)
        self.labels = tuple(labels)
        self.edges = nn.ModuleDict()
        #: module key → (its mixing key over the free labels, the operand it reads)
        self.keys: dict[str, tuple[tuple[int, ...], int]] = {}
        types = []
        for i, j in enumerate(in_opts):
            if self.in_label in b.fixed and j != b.fixed[self.in_label]:
                continue
            for k, o in enumerate(op_opts):
                if self.op_label in b.fixed and o != b.fixed[self.op_label]:
                    continue
                reg = _Region(b, ch.regions[o], [its[j]])  # type: ignore[index]
                self.edges[f"i{i}_o{k}"] = reg
                mix_key = tuple(v for lb, v in ((self.in_label, i), (self.op_label, k))
                                if lb in self.labels)
                self.keys[f"i{i}_o{k}"] = (mix_key, j)
                types.append(reg.out_type)
        self.out_type: TensorType = b.uniform(types, f"%{ch.name} (choose on select)",
                                              self.op_label, ch.loc)
        self.zeros = frozenset(self.keys[k][0] for k, r in self.edges.items() if r.zero)

    def _thunks(self, ctx: Any, ins: list[Any], emit: bool) -> dict[tuple[int, ...], Any]:
        out = {}
        for name, reg in self.edges.items():
            key, j = self.keys[name]
            out[key] = (lambda reg=reg, j=j: reg.run(ctx, [ins[j]], emit))
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        th = self._thunks(ctx, ins[0], False)
        return th[()]() if not self.labels else ctx.mix(self.labels, th, self.zeros)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        th = self._thunks(e, ins[0], True)  # type: ignore[arg-type]
        return th[()]() if not self.labels else e.mix(self.labels, th, self.zeros)


def _cell_nodes(b: _Builder, r: Graph, edges: dict[Node, Node]
                ) -> dict[Node, tuple[Node, Node, Node, Node]]:
    """``add`` node → (select a, choose a, select b, choose b) for every cell block that
    sums two edge operands over the same states and ops, all four decisions free: DARTS'
    cell node (:class:`CellEdges`). Other blocks keep their factored operands."""
    users: dict[Node, int] = {}
    for n in r.nodes():
        for i in n.inputs:
            users[i] = users.get(i, 0) + 1
    d = b.space.decision
    out: dict[Node, tuple[Node, Node, Node, Node]] = {}
    for n in r.nodes():
        if not isinstance(n.op, AddOp) or len(n.inputs) != 2:
            continue
        ca, cb = n.inputs
        if ca is cb or ca not in edges or cb not in edges or users.get(ca) != 1 \
                or users.get(cb) != 1:
            continue
        sa, sb = edges[ca], edges[cb]
        labels = [x.op.label for x in (sa, sb, ca, cb)]  # type: ignore[attr-defined]
        if len(set(labels)) < 4 or any(lb in b.fixed for lb in labels) \
                or list(sa.inputs) != list(sb.inputs) \
                or d(labels[0]).options != d(labels[1]).options \
                or d(labels[2]).options != d(labels[3]).options:
            continue
        out[n] = (sa, ca, sb, cb)
    return out


class _CellNode(nn.Module):
    """DARTS' cell node: one mixed op per incoming edge (candidate input state), each op
    with its own weights, summed over every edge with the softmax of the node's
    ``edges × ops`` logits (:class:`CellEdges`). A child keeps the two edges its
    assignment names (``in_a``/``op_a`` and ``in_b``/``op_b``), summed like the space's
    block."""

    def __init__(self, b: _Builder, parts: tuple[Node, Node, Node, Node],
                 its: list[TensorType]) -> None:
        super().__init__()
        sa, ca, sb, cb = parts
        self.spec = b.cell((sa.op.label, sb.op.label),  # type: ignore[attr-defined]
                           (ca.op.label, cb.op.label))  # type: ignore[attr-defined]
        self.edges = nn.ModuleDict()
        types = []
        for i, j in enumerate(self.spec.inputs):
            for k, o in enumerate(self.spec.ops):
                reg = _Region(b, ca.regions[o], [its[j]])  # type: ignore[index]
                self.edges[f"i{i}_o{k}"] = reg
                types.append(reg.out_type)
        self.out_type: TensorType = b.uniform(types, f"%{ca.name} (cell node)",
                                              self.spec.op_labels[0], ca.loc)
        self.zeros = frozenset((i, k) for i in range(len(self.spec.inputs))
                               for k in range(len(self.spec.ops))
                               if self.edges[f"i{i}_o{k}"].zero)  # type: ignore[union-attr]

    def _thunks(self, ctx: Any, ins: Any, emit: bool) -> dict[tuple[int, ...], Any]:
        out: dict[tuple[int, ...], Any] = {}
        for i, j in enumerate(self.spec.inputs):
            for k in range(len(self.spec.ops)):
                reg = self.edges[f"i{i}_o{k}"]
                out[(i, k)] = (lambda reg=reg, j=j: reg.run(ctx, [ins[j]], emit))
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if ctx.mode not in ("darts", "gumbel"):
            raise BackendError("a cell node with per-edge logits mixes every edge",
                               hint="use darts or gumbel mode (edge_alphas=True)")
        return ctx.mix_edges(self.spec.key, self._thunks(ctx, ins[0], False), self.zeros)

    def emit(self, e: _Emit, ins: list[Any]) -> Node:
        operands: list[Node] = ins[0]
        if e.path is None:
            return e.mix((self.spec.key,), self._thunks(e, operands, True), self.zeros)
        terms = []
        for in_lb, op_lb in zip(self.spec.in_labels, self.spec.op_labels):
            i, k = e.path[in_lb], e.path[op_lb]
            reg = self.edges[f"i{i}_o{k}"]
            terms.append(reg.run(e, [operands[self.spec.inputs[i]]], True))  # type: ignore[operator]
        return e.add(AddOp(), terms)


class _CellOutput(nn.Module):
    """A searched cell's output (:class:`~nasir.ops.CellOutputOp` with ``project``): the
    states no block consumed — which depends on every input choice of the cell — are
    concatenated and projected by ReLU-1×1-conv-BN. As in ENAS, one projection weight spans
    all states and each path uses the columns of its loose ends (enumerating the
    combinations instead is 518,400 candidates for ENAS-micro). Single-path modes only."""

    def __init__(self, b: _Builder, n: Node, its: list[TensorType]) -> None:
        super().__init__()
        op: Any = n.op
        self.name = n.name
        self.its = list(its)
        self.op = op
        self.options = {lb: b.space.decision(lb).options for lb in self._labels(op)}
        self.fixed = {lb: b.fixed[lb] for lb in self.options if lb in b.fixed}
        for lb in self.options:
            b.use(lb)
        final = its[-1].shape
        self.reduce = nn.ModuleDict()
        from nasir.ops import PathReduceOp

        for i, t in enumerate(its):
            if t.shape[0] != final[0] or t.shape[1] != final[1]:
                rop = PathReduceOp(final[0], 2 if t.shape[1] != final[1] else 1)
                self.reduce[str(i)], _ = b.lower_op(rop, [t])
        width = final[0] * len(its)
        full = TensorType((width, *final[1:]), its[-1].dtype)
        self.proj, self.out_type = b.lower_op(_relu_conv_bn(op.project), [full])
        self.conv = next(m for m in self.proj.modules() if isinstance(m, nn.Conv2d))
        self.bn = next(m for m in self.proj.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.chan = final[0]

    @staticmethod
    def _labels(op: Any) -> list[str]:
        keep = op.keep if isinstance(op.keep, tuple) else (op.keep,)
        out = []
        for v in (*op.used, *keep):
            lb = getattr(v, "label", None)
            if isinstance(lb, str) and lb not in out:
                out.append(lb)
        return out

    def _concrete(self, index_of: Any) -> Any:
        """The cell output op of the path (``index_of(label)`` → option index)."""
        values = {lb: self.fixed[lb] if lb in self.fixed else opts[index_of(lb)]
                  for lb, opts in self.options.items()}
        return resolve_refs(self.op, values)

    def _picked(self, concrete: Any) -> list[int]:
        used, keep = set(concrete.used), set(concrete.keep)
        return [i for i in range(len(self.its)) if i not in used or i in keep]

    def _cols(self, picked: list[int]) -> torch.Tensor:
        """The projection's input columns of the ``picked`` states."""
        c = self.chan
        return torch.cat([torch.arange(i * c, (i + 1) * c) for i in picked])

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if ctx.mode not in ONE_PATH:
            raise BackendError(
                f"%{self.name} (cell_output) depends on the sampled path; mixed ({ctx.mode}) "
                "supernets cannot run it", hint="use single or binarized mode (ENAS, "
                "SPOS, ProxylessNAS, hard Gumbel), or pin the cell's input decisions")
        picked = self._picked(self._concrete(ctx.pick))
        parts = [self.reduce[str(i)](ins[i]) if str(i) in self.reduce else ins[i]
                 for i in picked]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        w = self.conv.weight[:, self._cols(picked)]
        y = F.conv2d(F.relu(y), w, self.conv.bias, self.conv.stride, self.conv.padding,
                     self.conv.dilation)
        return self.bn(y)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if e.path is None:
            raise BackendError(f"%{self.name} (cell_output) has no mixed graph",
                               hint="predict memory for one path (single/binarized mode)")
        path = e.path
        concrete = self._concrete(lambda lb: path[lb])
        picked = self._picked(concrete)
        # the concrete op's lowered weights, in its own order: reductions, then the
        # projection with the loose ends' columns
        tensors: list[torch.Tensor] = []
        for i in picked:
            if str(i) in self.reduce:
                tensors += list(self.reduce[str(i)].state_dict().values())
        cols = self._cols(picked)
        for t in self.proj.state_dict().values():
            tensors.append(t[:, cols] if t is not None and t.dim() == 4 and
                           t.shape == self.conv.weight.shape else t)
        return e.add(concrete, ins, _Tensors(tensors))


def _relu_conv_bn(width: int) -> Op:
    from nasir.ops import ReLUConvBNOp

    return ReLUConvBNOp(out_channels=width, kernel=1)


class _Tensors(nn.Module):
    """Weights for :meth:`Supernet.child`, in the order of the child's lowered op."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        for k, t in enumerate(tensors):
            self.register_buffer(f"t{k}", t.detach().clone())


class Supernet(nn.Module):
    """A weight-sharing network for a whole space; see the module docstring.

    Args:
        space: the search space.
        mode: ``darts``, ``gumbel``, ``gumbel_hard``, ``binarized`` or ``single``
            (changeable later).
        fixed: decisions pinned to one value (needed for those that change types).
        seed: seeds candidate weights (each candidate from its own derived seed).
        tau: Gumbel-softmax temperature.
        affine: ``False`` freezes the BatchNorm scale and shift of every candidate of a
            free choice at 1 and 0 (DARTS' and NAS-Bench-201's search cells use
            ``affine=False``: a candidate cannot rescale its output against its mixing
            weight, so the architecture gradient compares the ops themselves). Children
            inherit the frozen 1 and 0 and may train them again.
        binary_paths: binarized mode's architecture-gradient estimator when the logits
            train: 1 (the sampled path's gate) or 2 (ProxylessNAS' pair of paths).
        per_input_ops: cell spaces (a block operand = an input choice feeding an op
            choice): ``True`` gives every candidate input its own op candidates (one
            mixed edge per input, as DARTS and ENAS build cells; mixing weight
            ``w_in · w_op``), so a reduction cell's input choices need no pinning;
            ``False`` mixes the inputs first and applies one op to the mixture.
        edge_alphas: DARTS' cell (implies ``per_input_ops``): a block summing two such
            operands over the same states, its four decisions free, becomes one node
            that sums a mixed op on *every* incoming edge, with one logit per (edge, op)
            (:attr:`cell_edges`; 14 edges × 8 ops per cell kind on the DARTS space)
            instead of input logits × op logits. Mixed modes (darts, gumbel) only.
    """

    def __init__(self, space: Space, *, mode: str = "darts",
                 fixed: Mapping[str, Any] | None = None, seed: int = 0,
                 tau: float = 1.0, affine: bool = True, binary_paths: int = 1,
                 per_input_ops: bool = False, edge_alphas: bool = False) -> None:
        super().__init__()
        self.space = space
        fixed = dict(space.check(fixed or {}, where="fixed decisions"))
        b = _Builder(space, fixed, seed, per_input_ops, edge_alphas)
        self.per_input_ops = bool(per_input_ops or edge_alphas)
        self.edge_alphas = bool(edge_alphas)
        inputs = space.body.inputs
        if len(inputs) != 1 or inputs[0].op.name != "input":
            raise BackendError("a supernet needs a space with exactly one input")
        self.input_type = inputs[0].op.infer(())
        self.body = _Region(b, space.body, [self.input_type])
        self.fixed = fixed
        self._options = dict(b.labels)
        #: cell nodes with per-edge logits (``edge_alphas``), by their logits' key
        self.cell_edges: dict[str, CellEdges] = dict(b.cells)
        in_cells = {lb for c in self.cell_edges.values() for lb in c.labels}
        self._label_keys = {lb: _key(lb) for lb in b.labels if lb not in in_cells}
        self._edge_keys = {k: _key(k) for k in self.cell_edges}
        logits = {_key(lb): torch.zeros(len(b.labels[lb])) for lb in self._label_keys}
        logits |= {_key(k): torch.zeros(len(c.inputs), len(c.ops))
                   for k, c in self.cell_edges.items()}
        self.alphas = nn.ParameterDict({k: nn.Parameter(v) for k, v in logits.items()})
        self.tau = float(tau)
        if binary_paths not in (1, 2):
            raise BackendError(f"binary_paths must be 1 or 2, got {binary_paths}",
                               hint="2 is ProxylessNAS' two-path gradient estimator")
        #: binarized mode's architecture-gradient estimator: 1 or 2 sampled paths
        self.binary_paths = int(binary_paths)
        #: the option pairs (label → index pair) of the last two-path binarized forward
        self.last_pairs: dict[str, tuple[int, int]] = {}
        self.mode = "single"
        self.set_mode(mode)
        self._path_index: dict[str, int] = {}
        #: the path sampled by the last binarized forward (label → value)
        self.last_path: dict[str, Any] = {}
        #: gumbel modes: per label, the Gumbel-softmax mask of the last forward (soft
        #: sample; gumbel_hard: its straight-through one-hot) — FBNet's ``m_l``
        self.last_mask: dict[str, torch.Tensor] = {}
        self.affine = bool(affine)
        if not affine:
            for m in self.modules():
                free = (isinstance(m, _OpChoice) and not m.fixed) or \
                    (isinstance(m, (_ValueChoice, _EdgeChoice)) and m.labels) or \
                    isinstance(m, _CellNode)
                if not free:
                    continue
                for bn in m.modules():
                    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine:
                        with torch.no_grad():
                            bn.weight.fill_(1.0)
                            bn.bias.zero_()
                        bn.weight.requires_grad_(False)
                        bn.bias.requires_grad_(False)

    # -- modes and paths ---------------------------------------------------------------
    def set_mode(self, mode: str, tau: float | None = None) -> None:
        """Switch the mixing mode (and the Gumbel temperature)."""
        if mode not in MODES:
            raise BackendError(f"unknown supernet mode {mode!r}",
                               hint=f"use one of {', '.join(MODES)}")
        if self.cell_edges and mode in ONE_PATH:
            raise BackendError(f"a supernet with per-edge logits (edge_alphas) mixes every "
                               f"edge of a cell node; {mode!r} runs one path",
                               hint="use darts or gumbel mode, or edge_alphas=False")
        self.mode = mode
        if tau is not None:
            self.tau = float(tau)

    def set_path(self, assignment: Mapping[str, Any]) -> None:
        """Set the path for ``single`` mode (labels of pinned decisions may be left out)."""
        a = self.space.check(assignment, where="supernet path")
        for lb, v in a.items():
            if lb in self.fixed and self.fixed[lb] != v:
                raise AssignmentError(f"path sets {lb}={v!r} but the supernet pins it to "
                                      f"{self.fixed[lb]!r}")
        self._path_index = {lb: self._options[lb].index(v) for lb, v in a.items()
                            if lb in self._options}

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits (one vector per free decision)."""
        return list(self.alphas.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable weight except the architecture logits (frozen BatchNorm affine
        parameters of ``affine=False`` are left out)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch and p.requires_grad]

    def decisions(self) -> dict[str, tuple]:
        """Free decisions with a logit vector of their own, and their options (the
        decisions of :attr:`cell_edges` nodes share their node's matrix instead)."""
        return {lb: self._options[lb] for lb in self._label_keys}

    def derive(self) -> dict[str, Any]:
        """The assignment of the largest logit per decision (plus the pinned ones); cell
        nodes with per-edge logits by DARTS' rule (:meth:`CellEdges.derive`)."""
        out = dict(self.fixed)
        for lb in self._label_keys:
            out[lb] = self._options[lb][int(self.alphas[_key(lb)].argmax())]
        for k, c in self.cell_edges.items():
            out |= c.derive(F.softmax(self.alphas[_key(k)].detach(), -1).tolist())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the supernet in its current mode."""
        return self.body.run(_Ctx(self), [x])

    # -- graphs, children, memory ------------------------------------------------------
    def _emit(self, assignment: Mapping[str, Any] | None) -> _Emit:
        path = None
        if assignment is not None:
            a = dict(self.space.check(assignment, where="child assignment"))
            a.update(self.fixed)
            path = {lb: self._options[lb].index(a[lb]) for lb in self._options if lb in a}
        e = _Emit(path)
        x = e.g.add(InputOp(shape=self.input_type.shape, dtype=self.input_type.dtype),
                    name="x")
        e.g.set_output(self.body.run(e, [x], True))
        return e

    def child_graph(self, assignment: Mapping[str, Any]) -> Graph:
        """The concrete graph of ``assignment`` (equal to ``space.instantiate`` in effect)."""
        return self._emit(assignment).g

    def mixed_graph(self) -> Graph:
        """A graph that computes like one DARTS/Gumbel step: every candidate, each output
        weighted (modelled as a ``mul``) and summed. Used for memory prediction."""
        return self._emit(None).g

    def child(self, assignment: Mapping[str, Any]) -> nn.Module:
        """A standalone lowered module for ``assignment`` with the supernet's weights."""
        e = self._emit(assignment)
        m = lower(e.g, seed=0)
        x = prepare(e.g)
        groups: dict[str, list[str]] = {}
        origin = {}
        for n in x.nodes():
            origin[n.name] = (n.meta or {}).get("origin", n.name)
        for k in m.state_dict():
            groups.setdefault(origin[k.split(".", 1)[0]], []).append(k)
        weights: dict[str, torch.Tensor] = {}
        for name, keys in groups.items():
            src = list(e.sources[name].state_dict().values())
            if len(src) != len(keys):
                raise BackendError(f"cannot map weights of %{name} onto the supernet",
                                   hint="report this: candidate and child disagree")
            weights.update(zip(keys, src))
        load_weights(m, weights)
        m.train(self.training)
        return m

    def predict_memory(self, batch_size: int, *, mode: str | None = None,
                       assignment: Mapping[str, Any] | None = None,
                       optimizer: str = "sgd", arch_grad: bool | None = None) -> Any:
        """Predicted peak memory of one weight-training step in ``mode`` (default: the
        current one). Single / binarized use ``assignment`` (default: :meth:`derive`).
        All supernet weights stay resident; gradients exist only for the weights used.
        ``arch_grad``: whether the logits require grad in that step (default: as they do
        now); then autograd keeps every weighted candidate output (darts / gumbel) or the
        gated sampled outputs (binarized; with ``binary_paths=2`` also each choice's
        second, no-grad output). See :mod:`nasir.backends.torch.memory`."""
        from nasir.backends.torch.memory import MemoryEstimate, predict_training_memory

        mode = mode or self.mode
        if mode not in MODES:
            raise BackendError(f"unknown supernet mode {mode!r}")
        g = self.mixed_graph() if mode in ("darts", "gumbel") else \
            self.child_graph(assignment or self.derive())
        if arch_grad is None:
            arch_grad = any(p.requires_grad for p in self.arch_parameters())
        est = predict_training_memory(g, batch_size, optimizer,
                                      arch_grad=arch_grad and mode != "single")
        resident = sum(t.numel() * t.element_size() for t in self.parameters())
        resident += sum(t.numel() * t.element_size() for t in self.buffers())
        extra = 0
        if mode == "binarized" and arch_grad and self.binary_paths == 2:
            # the two-path estimator keeps each choice's second (no-grad) output for the
            # gate gradient: one more output per mixed op, alive until backward
            from nasir.backends.torch.memory import _gated, _nbytes

            extra = batch_size * sum(_nbytes(n) for n in _gated(g, prepare(g)))
        return MemoryEstimate(resident, est.gradients, est.optimizer,
                              est.activations + extra, est.transient)
