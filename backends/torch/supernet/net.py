"""The :class:`Supernet` module (see :mod:`nasir.backends.torch.supernet`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasir.backends.torch.lowering import load_weights, lower, prepare
from nasir.backends.torch.supernet.build import _Builder, _key
from nasir.backends.torch.supernet.cells import CellEdges, _CellNode, _EdgeChoice
from nasir.backends.torch.supernet.choices import _OpChoice, _ValueChoice
from nasir.backends.torch.supernet.emit import _Emit
from nasir.backends.torch.supernet.mixing import MODES, ONE_PATH, _Ctx
from nasir.errors import AssignmentError, BackendError
from nasir.graph import Graph
from nasir.ops import InputOp
from nasir.space import Space


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
        self.body = b.subregion(space.body, [self.input_type])
        self.fixed = fixed
        self._options = dict(b.used)
        #: cell nodes with per-edge logits (``edge_alphas``), by their logits' key
        self.cell_edges: dict[str, CellEdges] = dict(b.cells_by_key)
        in_cells = {lb for c in self.cell_edges.values() for lb in c.labels}
        self._label_keys = {lb: _key(lb) for lb in b.used if lb not in in_cells}
        self._edge_keys = {k: _key(k) for k in self.cell_edges}
        logits = {_key(lb): torch.zeros(len(b.used[lb])) for lb in self._label_keys}
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
