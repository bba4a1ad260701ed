"""The supernet steps of choice points: a plain op, a value choice (``$label`` fields), an
op choice (``choose``), a depth choice (``repeat``) and an input choice (``select``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from nasir.backends.torch.supernet.emit import _Emit
from nasir.backends.torch.supernet.mixing import ONE_PATH
from nasir.errors import AssignmentError, BackendError, NasirError
from nasir.graph import Node
from nasir.interpret import reducer
from nasir.interpret.mixed import Point, ValuePoint
from nasir.ops import Op, PadConcatOp
from nasir.types import TensorType

if TYPE_CHECKING:
    from nasir.backends.torch.supernet.build import _Builder, _Region


def _region(m: nn.Module) -> _Region:
    """A region module held in a ModuleDict / ModuleList, as its own type."""
    return cast("_Region", m)


#: most candidates a value choice may enumerate (one lowered module each)
MAX_VALUE_CANDIDATES = 4096

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
        # held weakly (mixing._WeakMemo): an entry serves only while its operands and output
        # are alive anyway, and the identity check above catches an id reused since
        memo[key] = (tuple(ins), out)
        return out

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if e.path is None and self.pure:  # the mixed graph shares them as _Ctx does
            key = (self.op.signature(), *(n.name for n in ins))
            if key not in e.memo:
                e.memo[key] = e.add(self.op, ins, self.net)
            return e.memo[key]
        return e.add(self.op, ins, self.net)

class _ValueChoice(nn.Module):
    def __init__(self, b: _Builder, p: ValuePoint, its: list[TensorType]) -> None:
        super().__init__()
        n = p.node
        free = list(p.free)
        self.labels = p.free
        self.cands = nn.ModuleDict()
        self.ops: dict[str, Op] = {}
        types = []
        combos = p.combinations()
        if combos > MAX_VALUE_CANDIDATES:
            raise BackendError(
                f"%{n.name} ({n.op.name}) depends on {len(free)} decisions with {combos:,} "
                f"value combinations; a supernet builds one candidate per combination "
                f"(at most {MAX_VALUE_CANDIDATES:,})", loc=n.loc,
                where=f"decisions {', '.join(free[:4])}{', …' if len(free) > 4 else ''}",
                hint="pin some of them with fixed={...} (e.g. a NASNet cell's output, the "
                     "concatenated loose ends, depends on every input choice of its cell)")
        for idx, op in p.candidates():
            try:
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
    def __init__(self, b: _Builder, p: Point, its: list[TensorType]) -> None:
        super().__init__()
        self.fixed = p.pinned
        self.label = p.label
        self.regions = nn.ModuleDict()
        self.index: dict[str, int] = {}
        types = []
        for i in p.open:
            r = b.branch(p, i, its)
            self.regions[f"o{i}"] = r
            self.index[f"o{i}"] = i
            types.append(r.out_type)
        self.out_type = b.uniform(types, f"%{p.node.name} (choose)", p.label, p.node.loc)
        self.zeros = frozenset((self.index[k],) for k, r in self.regions.items()
                               if _region(r).zero)

    def _only(self) -> _Region:
        return _region(next(iter(self.regions.values())))

    def _thunks(self, ctx: Any, ins: list[Any], emit: bool) -> dict[tuple[int, ...], Any]:
        out: dict[tuple[int, ...], Any] = {}
        for k, m in self.regions.items():
            r = _region(m)
            out[(self.index[k],)] = lambda r=r: r.run(ctx, ins, emit)
        return out

    def forward(self, ctx: Any, ins: list[Any]) -> Any:
        if self.fixed:
            return self._only().run(ctx, ins)
        return ctx.mix((self.label,), self._thunks(ctx, ins, False), self.zeros)

    def emit(self, e: _Emit, ins: list[Node]) -> Node:
        if self.fixed:
            return self._only().run(e, ins, True)
        return e.mix((self.label,), self._thunks(e, ins, True), self.zeros)

class _Repeat(nn.Module):
    def __init__(self, b: _Builder, p: Point, its: list[TensorType]) -> None:
        super().__init__()
        self.label = p.label
        self.fixed = p.pinned
        counts = tuple(p.options[i] for i in p.open)
        self.counts = counts
        self.count_index = {c: p.options.index(c) for c in counts}
        self.layers = nn.ModuleList()
        types = {0: its[0]}
        t = its[0]
        for i in range(max(counts)):
            r = b.layer(p, i, [t])
            self.layers.append(r)
            t = r.out_type
            types[i + 1] = t
        self.out_type = b.uniform([types[c] for c in counts], f"%{p.node.name} (repeat)",
                                  p.label, p.node.loc)

    def _outs(self, ctx: Any, x: Any, emit: bool, upto: int) -> dict[int, Any]:
        outs = {0: x}
        for i in range(upto):
            x = _region(self.layers[i]).run(ctx, [x], emit)
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
    def __init__(self, b: _Builder, p: Point, its: list[TensorType]) -> None:
        super().__init__()
        self.label = p.label
        self.reduce = p.reduce
        self.fixed = p.pinned
        self.picks = p.picks()
        types = []
        for pick in self.picks.values():
            ts = [its[j] for j in pick]
            types.append(ts[0] if len(ts) == 1 else reducer(self.reduce).infer(tuple(ts)))
        self.out_type = b.uniform(types, f"%{p.node.name} (select)", p.label, p.node.loc)

    def _combine(self, ins: list[Any], pick: tuple[int, ...], e: _Emit | None) -> Any:
        chosen = [ins[j] for j in pick]
        if len(chosen) == 1:
            return chosen[0]
        if e is not None:
            return e.add(reducer(self.reduce), chosen)
        if self.reduce == "add":
            out = chosen[0]
            for c in chosen[1:]:
                out = out + c
            return out
        if self.reduce == "pad_concat":  # as PadConcatOp lowers: zero-pad bottom/right
            pads = PadConcatOp.pads([tuple(c.shape[-2:]) for c in chosen])
            chosen = [F.pad(c, (0, r, 0, b)) for c, (b, r) in zip(chosen, pads)]
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
