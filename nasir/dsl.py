"""The search-space DSL: build a :class:`~nasir.space.Space` with choice points in Python.

>>> from nasir.dsl import SpaceBuilder
>>> from nasir.ops import ConvBNActOp, GlobalAvgPoolOp, FlattenOp, LinearOp, IdentityOp
>>> s = SpaceBuilder("toy", input_shape=(3, 16, 16))
>>> k = s.value("kernel", [3, 5])
>>> x = s.op(ConvBNActOp(out_channels=8, kernel=k), s.input)
>>> x = s.choose("extra", {"conv": lambda b, h: b.op(ConvBNActOp(out_channels=8), h),
...                        "skip": lambda b, h: b.op(IdentityOp(), h)}, x)
>>> x = s.op(LinearOp(out_features=10), s.op(FlattenOp(), s.op(GlobalAvgPoolOp(), x)))
>>> space = s.build(x, references={"small": {"kernel": 3, "extra": "skip"}})
>>> space.size, [d.label for d in space.decisions]
(4, ['kernel', 'extra'])
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from nasir.errors import SpecError
from nasir.graph import Graph, Node
from nasir.loc import caller_loc
from nasir.ops import InputOp, Op, Ref
from nasir.ops.control import ArgOp, ChooseOp, RepeatOp, SelectOp
from nasir.space import Constraint, Decision, DecisionMeta, Space

__all__ = ["SpaceBuilder"]

RegionFn = Callable[..., Node]


def _takes_index(fn: RegionFn) -> bool:
    """Whether a repeat body takes a third positional parameter without a default."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(pos) >= 3 and pos[2].default is inspect.Parameter.empty


class _Registry:
    def __init__(self) -> None:
        self.decisions: dict[str, Decision] = {}
        self.scope: dict[str, Any] = {}

    def declare(self, label: str, kind: str, options: Sequence[Any],
                meta: Mapping[str, Any] | None = None) -> Decision:
        loc = caller_loc()
        try:
            dmeta = DecisionMeta(**{**self.scope, **(meta or {})})
        except TypeError:
            bad = sorted(set(meta or {}) - set(DecisionMeta.__dataclass_fields__))
            raise SpecError(f"decision {label!r}: unknown metadata {bad}", loc=loc,
                            hint="metadata: role, windows, stage, block, layer, cell, slot"
                            ) from None
        d = Decision(label, kind, tuple(options), loc, dmeta)
        old = self.decisions.get(label)
        if old is None:
            self.decisions[label] = d
            return d
        if old.meta != d.meta:
            raise SpecError(
                f"decision {label!r} is declared twice with different metadata: "
                f"{old.meta.text()} and {d.meta.text()}",
                where=f"first declared at {old.loc}", loc=loc,
                hint="a shared decision has one role and one position; declare it in the "
                     "same scope")
        if old.kind != kind or old.options != d.options:
            raise SpecError(
                f"decision {label!r} is declared twice with different domains: "
                f"{old.kind} {list(old.options)} and {kind} {list(d.options)}",
                where=f"first declared at {old.loc}",
                loc=loc,
                hint="use one label per domain; reuse a label only to share a decision",
            )
        return old


class SpaceBuilder:
    """Builds the body graph of a space; nested builders build the regions of choices."""

    def __init__(
        self,
        name: str,
        input_shape: Sequence[int] | None = (3, 32, 32),
        *,
        _graph: Graph | None = None,
        _registry: _Registry | None = None,
    ) -> None:
        self.name = name
        self.graph = _graph if _graph is not None else Graph(name)
        self._reg = _registry or _Registry()
        self._constraints: list[Constraint] = []
        self._input: Node | None = None
        if input_shape is not None:
            self._input = self.graph.add(InputOp(shape=tuple(input_shape)), name="x",
                                         loc=caller_loc())

    @property
    def input(self) -> Node:
        """The space's input node (top-level builders only)."""
        if self._input is None:
            raise SpecError("a region has no input node; use the operands it receives")
        return self._input

    # -- ops -------------------------------------------------------------------------
    def op(self, op: Op, *inputs: Node, name: str | None = None) -> Node:
        """Add ``op`` applied to ``inputs``; attribute values may be refs from :meth:`value`."""
        loc = caller_loc()
        if not isinstance(op, Op):
            raise SpecError(f"expected an op instance, got {op!r}", loc=loc,
                            hint="write e.g. Conv2dOp(out_channels=16), not a class or string")
        for i in inputs:
            if not isinstance(i, Node) or i.graph is not self.graph:
                raise SpecError(
                    f"{op.name}: an input comes from another graph or region",
                    loc=loc,
                    hint="inside a choice, use only the operands the region function receives",
                )
        return self.graph.add(op, inputs, name=name, loc=loc)

    # -- choice points ---------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, **where: Any) -> Iterator[None]:
        """Decisions declared inside (regions of choices included) get these metadata
        fields — ``stage``, ``block``, ``layer`` (ints), ``cell``, ``slot`` (names); scopes
        nest, the inner value wins.

        >>> from nasir.ops import ConvBNActOp
        >>> s = SpaceBuilder("scoped", input_shape=(3, 8, 8))
        >>> with s.scope(block=2):
        ...     k = s.value("b2_kernel", [3, 5], role="kernel")
        >>> s.build(s.op(ConvBNActOp(out_channels=4, kernel=k), s.input)).decisions[0].meta
        DecisionMeta(role='kernel', stage=None, block=2, layer=None, cell=None, slot=None, \
windows=())
        """
        bad = sorted(set(where) - {"stage", "block", "layer", "cell", "slot"})
        if bad:
            raise SpecError(f"scope takes stage, block, layer, cell and slot, not {bad[0]!r}",
                            loc=caller_loc(), hint="set a role with role= on the choice")
        old = self._reg.scope
        self._reg.scope = {**old, **where}
        try:
            yield
        finally:
            self._reg.scope = old

    def value(self, label: str, options: Sequence[Any], *, role: str | None = None,
              **meta: Any) -> Ref:
        """Value choice: returns a ref to use as an op attribute (channels, kernel, ratio…).

        ``role`` says what the value is (``width``, ``kernel``, ``expansion`` …: see
        :data:`nasir.decision_meta.ROLES`); ``meta`` sets other metadata fields directly.
        """
        self._reg.declare(label, "value", options, {"role": role, **meta} if role else meta)
        return Ref(label)

    def choose(self, label: str, branches: Mapping[str, RegionFn], *operands: Node,
               role: str | None = None, **meta: Any) -> Node:
        """Op choice: each branch builds a sub-graph from the operands; one is picked.
        ``role`` (default ``op``) and ``meta`` as in :meth:`value`."""
        if not branches:
            raise SpecError(f"op choice {label!r} has no branches", loc=caller_loc())
        self._reg.declare(label, "op", list(branches), {"role": role, **meta} if role else meta)
        regions = {k: self._region(f"{label}.{k}", fn, len(operands))
                   for k, fn in branches.items()}
        return self.graph.add(ChooseOp(label=label), operands, loc=caller_loc(),
                              regions=regions)

    def repeat(self, label: str, counts: Sequence[int], first: RegionFn, x: Node,
               rest: RegionFn | None = None, *, role: str | None = None, **meta: Any) -> Node:
        """Depth choice: apply ``first`` once, then ``rest`` (default ``first``) n-1 times.

        A body with a third parameter, ``first(b, h, i)``, gets the repetition index ``i``
        (0-based): one region is built per index up to ``max(counts)``, so every layer can
        have its own decisions (label them with ``i``). A decision of layer ``i`` is active
        only when the chosen count exceeds ``i``. ``rest`` may take the index as well.

        >>> from nasir.ops import ConvBNActOp
        >>> s = SpaceBuilder("deep", input_shape=(3, 8, 8))
        >>> x = s.repeat("depth", [1, 2], lambda b, h, i: b.op(
        ...     ConvBNActOp(out_channels=4, kernel=b.value(f"k{i}", [3, 5])), h), s.input)
        >>> sp = s.build(x)
        >>> [d.label for d in sp.decisions], sp.raw_size, sp.size
        (['depth', 'k0', 'k1'], 8, 6)
        >>> sorted(sp.active({"depth": 1, "k0": 5, "k1": 3}))
        ['depth', 'k0']
        """
        for c in counts:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise SpecError(f"depth choice {label!r}: counts must be ints >= 0, got {c!r}",
                                loc=caller_loc())
        self._reg.declare(label, "depth", list(counts), {"role": role, **meta} if role else meta)
        indexed = _takes_index(first) or (rest is not None and _takes_index(rest))
        regions: dict[str, Graph] = {}
        if indexed:
            for i in range(max(counts)):
                fn = first if i == 0 or rest is None else rest
                extra = (i,) if _takes_index(fn) else ()
                regions[str(i)] = self._region(f"{label}.{i}", fn, 1, extra)
        else:
            regions["first"] = self._region(f"{label}.first", first, 1)
            if rest is not None:
                regions["rest"] = self._region(f"{label}.rest", rest, 1)
        return self.graph.add(RepeatOp(label=label), [x], loc=caller_loc(), regions=regions)

    def select(self, label: str, candidates: Sequence[Node], k: int = 1,
               reduce: str = "add", *, role: str | None = None, **meta: Any) -> Node:
        """Input choice: pick ``k`` of ``candidates`` (combined by ``reduce`` when k > 1)."""
        n = len(candidates)
        if not 1 <= k <= n:
            raise SpecError(f"input choice {label!r} picks {k} of {n} candidates",
                            loc=caller_loc(), hint="use 1 <= k <= number of candidates")
        options = list(range(n)) if k == 1 else list(itertools.combinations(range(n), k))
        self._reg.declare(label, "input", options, {"role": role, **meta} if role else meta)
        return self.graph.add(SelectOp(label=label, k=k, reduce=reduce), candidates,
                              loc=caller_loc())

    def select_any(self, label: str, candidates: Sequence[Node], required: Sequence[int] = (),
                   reduce: str = "add", *, role: str | None = None, **meta: Any) -> Node:
        """Input choice of any subset of ``candidates`` that contains ``required`` (combined
        by ``reduce``); the options are the subsets as sorted index tuples, smallest first.

        With ``required`` empty the empty subset is left out (a value must come from
        somewhere). ENAS macro skip connections and NAS-RL anchors use this.
        """
        n = len(candidates)
        req = tuple(sorted(set(required)))
        if any(not 0 <= i < n for i in req):
            raise SpecError(f"input choice {label!r}: required index out of range 0..{n - 1}",
                            loc=caller_loc())
        free = [i for i in range(n) if i not in req]
        options = [tuple(sorted(req + c)) for r in range(len(free) + 1)
                   for c in itertools.combinations(free, r)]
        options = [o for o in options if o]
        self._reg.declare(label, "input", options, {"role": role, **meta} if role else meta)
        return self.graph.add(SelectOp(label=label, k=1, reduce=reduce), candidates,
                              loc=caller_loc())

    def constraint(self, metric: str, maximum: float) -> None:
        """Attach an upper bound on ``macs``, ``params`` or ``latency_ms`` to the space."""
        self._constraints.append(Constraint(metric, float(maximum)))

    def _region(self, name: str, fn: RegionFn, nargs: int, extra: tuple = ()) -> Graph:
        sub = SpaceBuilder(name, None, _graph=Graph(name), _registry=self._reg)
        args = [sub.graph.add(ArgOp(index=i), name=f"a{i}") for i in range(nargs)]
        out = fn(sub, *args, *extra)
        if not isinstance(out, Node) or out.graph is not sub.graph:
            raise SpecError(f"region {name} must return a value built in it", loc=caller_loc(),
                            hint="return the last node the branch function made")
        sub.graph.set_output(out)
        return sub.graph

    # -- result ----------------------------------------------------------------------
    def build(self, output: Node, *, references: Mapping[str, Mapping[str, Any]] | None = None,
              meta: Mapping[str, Any] | None = None, view: Space | None = None) -> Space:
        """Finish the space with ``output`` as its result (``view``: see
        :attr:`~nasir.space.Space.view`)."""
        self.graph.set_output(output)
        sp = Space(self.name, self.graph, tuple(self._reg.decisions.values()), references,
                   tuple(self._constraints), meta, view)
        sp.validate()
        return sp
