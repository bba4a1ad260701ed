"""Readable names for an exported network: op kind plus where the node sits in the space.

The torch backend calls each parameterised node's submodule after its node number
(``"12.weight"``); supernets, weight sharing and weight inheritance depend on that. A user
who reads, fine-tunes or edits the exported ``model.py`` wants ``self.b2_layer1_dw_conv``
instead, so the export renames — the lowering is left alone:

- :func:`scoped_instantiate` instantiates a space and says, for each node, which repeat
  iteration (``b2_layers``, layer 1) and which choice (``b2_op`` = ``mbconv3``) made it;
- :func:`readable_names` names every node the torch backend lowers: the scope
  (``b2_layer1``; ``stem`` / ``head`` for the fixed parts before and after the searched
  ones) plus the op kind (``conv``, ``dw_conv``, ``bn``, ``relu`` …), numbered only where a
  scope holds several of a kind; a batch norm right after a conv is named after it
  (``conv1`` → ``bn1``, ``dw_conv`` → ``dw_bn``);
- :func:`rename_lowered` gives the lowered module those names (submodules, state dict
  keys and the forward's variables).

Names are unique Python identifiers, and a function of the architecture alone.

>>> from nasir.spaces import get_space
>>> sp = get_space("tiny_mnasnet")
>>> g, scopes = scoped_instantiate(sp, sp.reference("small"))
>>> names = readable_names(g, scopes)
>>> [names[k] for k in ("12", "13", "14", "15", "16", "11")]
['stem_conv', 'stem_bn', 'stem_relu', 'b1_layer1_dw_conv', 'b1_layer1_dw_bn', 'head_linear']
>>> [s.to_json() for s in scopes["3"]]
[{'decision': 'b2_layers', 'layer': 1}, {'decision': 'b2_op', 'option': 'mbconv3'}]
"""

from __future__ import annotations

import builtins
import keyword
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasir.errors import BackendError
from nasir.graph import Graph, Node
from nasir.interpret import Instantiator
from nasir.space import Space

__all__ = ["Scope", "readable_names", "rename_lowered", "scoped_instantiate"]

#: op kinds whose names are shortened; other ops keep their op name
_KINDS = {"conv2d": "conv", "depthwise_conv2d": "dw_conv", "batch_norm": "bn"}
_CONVS = ("conv2d", "depthwise_conv2d")
_UNNAMED = ("input", "identity")  # the lowering makes no fx node of its own for these
#: globals of the generated ``model.py`` that a name must not shadow
_GENERATED = {"torch", "nn", "device", "fx_pytree", "pytree", "inf", "nan", "NoneType",
              "operator", "math", "self", "Net", "BatchNorm1d", "BatchNorm2d", "INPUT_SHAPE"}


@dataclass(frozen=True)
class Scope:
    """One decision that placed a node: a repeat iteration or a chosen option.

    ``kind`` is ``"depth"`` (``index`` is the 1-based layer of the repeat) or ``"op"``
    (``option`` is the chosen branch; ``index`` numbers the choice points sharing the
    label, 0 when it is the only one).

    >>> Scope("depth", "b2_layers", 1).part()
    'b2_layer1'
    >>> Scope("op", "edge_0_1", 3, "nor_conv_3x3").part()
    'edge_0_1_3'
    """

    kind: str
    label: str
    index: int = 0
    option: Any = None

    def part(self) -> str:
        """This scope's piece of a readable name."""
        if self.kind == "depth":
            cut = self.label.rfind("_")
            stem = self.label[:cut] if cut > 0 else self.label
            return f"{stem}_layer{self.index}"
        return f"{self.label}_{self.index}" if self.index else self.label

    def to_json(self) -> dict[str, Any]:
        """JSON form, as written to ``manifest.json``."""
        if self.kind == "depth":
            return {"decision": self.label, "layer": self.index}
        out: dict[str, Any] = {"decision": self.label, "option": self.option}
        if self.index:
            out["occurrence"] = self.index
        return out


def _region_tags(body: Graph) -> dict[int, tuple[str, str, Node, int, Any]]:
    """``id(region graph)`` → (kind, label, owning node, occurrence, option) over a body."""
    owners: list[tuple[Node, str]] = []
    numbered: set[Node] = set()  # choices outside repeats: a layer number says where others are

    def walk(g: Graph, in_repeat: bool) -> None:
        for n in g.nodes():
            if n.op.name in ("choose", "repeat") and n.regions:
                owners.append((n, n.op.label))  # type: ignore[attr-defined]
                if not in_repeat and n.op.name == "choose":
                    numbered.add(n)
            for r in (n.regions or {}).values():
                walk(r, in_repeat or n.op.name == "repeat")

    walk(body, False)
    total = Counter(label for n, label in owners if n in numbered)
    seen: Counter[str] = Counter()
    tags: dict[int, tuple[str, str, Node, int, Any]] = {}
    for n, label in owners:
        regions = n.regions or {}
        if n.op.name == "repeat":
            for r in regions.values():
                tags[id(r)] = ("depth", label, n, 0, None)
            continue
        occ = 0
        if n in numbered and total[label] > 1:
            seen[label] += 1
            occ = seen[label]
        for key, r in regions.items():
            tags[id(r)] = ("op", label, n, occ, key)
    return tags


class _ScopeWatcher(Instantiator):
    """The space's own instantiation, noting which region each new node was made in."""

    def __init__(self, space: Space, a: Any, g: Graph) -> None:
        super().__init__(space, a, g)
        self.tags = _region_tags(space.body)
        self.frames: list[tuple[int, tuple[Scope, ...]]] = [(0, ())]
        self.calls = 0
        self.layers: dict[tuple[int, int], int] = {}
        self.scopes: dict[str, tuple[Scope, ...]] = {}

    def region(self, r: Graph, args: list[Node]) -> Node:
        frame, path = self.frames[-1]
        tag = self.tags.get(id(r))
        if tag is not None:
            kind, label, owner, occ, option = tag
            if kind == "depth":  # one execution of a repeat node per frame: count its layers
                key = (frame, id(owner))
                occ = self.layers[key] = self.layers.get(key, 0) + 1
            path = (*path, Scope(kind, label, occ, option))
        self.calls += 1
        self.frames.append((self.calls, path))
        start = len(self.g)
        try:
            out = super().region(r, args)
        finally:
            self.frames.pop()
        for n in self.g.nodes()[start:]:  # inner regions have tagged theirs already
            self.scopes.setdefault(n.name, path)
        return out


def scoped_instantiate(space: Space,
                       assignment: Mapping[str, Any]) -> tuple[Graph, dict[str, tuple[Scope, ...]]]:
    """``space.instantiate(assignment)`` plus, per node name, the scopes that made it.

    The graph is the one :meth:`Space.instantiate` builds (same node names); a node outside
    every choice point has the empty scope.

    >>> from nasir.spaces import get_space
    >>> sp = get_space("tiny_mnasnet")
    >>> g, scopes = scoped_instantiate(sp, sp.reference("small"))
    >>> g.text() == sp.instantiate(sp.reference("small")).text()
    True
    >>> scopes["1"], [s.part() for s in scopes["5"]]
    ((), ['b3_layer2', 'b3_op'])
    """
    a = space.check(assignment)
    g = Graph(space.name)
    watcher = _ScopeWatcher(space, a, g)
    g.set_output(watcher.region(space.body, []))
    g.active_decisions = watcher.active
    return g, watcher.scopes


def _prefix(scopes: tuple[Scope, ...]) -> str:
    # a layer of a repeat says where a node is; the op choice inside it adds nothing
    depth = [s.part() for s in scopes if s.kind == "depth"]
    return "_".join(depth or [s.part() for s in scopes])


def _groups(nodes: list[Node], ops: Mapping[str, str],
            scopes: Mapping[str, tuple[Scope, ...]]) -> dict[Node, str]:
    """The scope part of each node's name."""
    origin = {n: (n.meta or {}).get("origin", n.name) for n in nodes}
    prefix = {n: _prefix(scopes.get(origin[n], ())) for n in nodes}
    scoped = [i for i, n in enumerate(nodes) if prefix[n]]
    first, last = (scoped[0], scoped[-1]) if scoped else (0, len(nodes) - 1)
    between = [origin[n] for i, n in enumerate(nodes)
               if first <= i <= last and not prefix[n] and origin[n] != n.name]
    composites = list(dict.fromkeys(between))  # composite nodes outside scopes, in order
    per_op = Counter(ops[c] for c in composites)
    seen: Counter[str] = Counter()
    number: dict[str, int] = {}
    for c in composites:
        seen[ops[c]] += 1
        number[c] = seen[ops[c]]
    out: dict[Node, str] = {}
    for i, n in enumerate(nodes):
        if prefix[n]:
            out[n] = prefix[n]
        elif scoped and i < first:
            out[n] = "stem"
        elif scoped and i > last:
            out[n] = "head"
        elif origin[n] in number:
            op = ops[origin[n]]
            out[n] = op + (str(number[origin[n]]) if per_op[op] > 1 else "")
        else:
            out[n] = ""
    return out


def _kinds(nodes: list[Node], groups: Mapping[Node, str]) -> dict[Node, str]:
    """Op kind of each node, numbered within its group where the group has several."""
    after: dict[Node, Node] = {}  # batch norm → the conv it normalises
    kind: dict[Node, str] = {}
    for n in nodes:
        src = n.inputs[0] if n.inputs else None
        if (n.op.name == "batch_norm" and src is not None and src.op.name in _CONVS
                and groups.get(src) == groups[n]):
            after[n] = src
        else:
            kind[n] = _KINDS.get(n.op.name, n.op.name)
    counts = Counter((groups[n], k) for n, k in kind.items())
    seen: Counter[tuple[str, str]] = Counter()
    out: dict[Node, str] = {}
    for n in nodes:  # topological: a conv is named before its batch norm
        if n in after:
            conv = out[after[n]]
            cut = conv.rfind("conv")
            out[n] = conv[:cut] + "bn" + conv[cut + 4:]
            continue
        key = (groups[n], kind[n])
        seen[key] += 1
        sep = "_" if kind[n][-1].isdigit() else ""  # relu6_2, not relu62
        out[n] = kind[n] + (f"{sep}{seen[key]}" if counts[key] > 1 else "")
    return out


def _reserved() -> set[str]:
    from torch import nn

    return set(keyword.kwlist) | set(dir(builtins)) | set(dir(nn.Module)) | _GENERATED


def _identifier(text: str) -> str:
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in text).strip("_") or "node"
    return f"n{clean}" if clean[0].isdigit() else clean


def readable_names(graph: Graph,
                   scopes: Mapping[str, tuple[Scope, ...]] | None = None) -> dict[str, str]:
    """A readable, unique identifier for every node the torch backend lowers to code.

    ``graph`` is a concrete graph as instantiated (composites not yet expanded); keys are
    the node names of the backend's expanded copy — the submodule names ``"12"`` of
    :func:`nasir.backends.torch.lower` — and ``scopes`` comes from
    :func:`scoped_instantiate` (without it, nodes are named by kind and composite).

    >>> from nasir.text import parse_graph
    >>> g = parse_graph('''graph @tiny {
    ...   %x = input() {shape=[3, 8, 8]}
    ...   %1 = conv_bn_act(%x) {out_channels=4}
    ...   %2 = conv_bn_act(%1) {out_channels=4}
    ...   %3 = global_avg_pool(%2) {keepdims=false}
    ...   %4 = linear(%3) {out_features=2}
    ...   return %4
    ... }''')
    >>> names = readable_names(g)
    >>> [names[k] for k in ("5", "6", "7", "8", "9", "10", "3", "4")]  # doctest: +ELLIPSIS
    ['conv_bn_act1_conv', 'conv_bn_act1_bn', 'conv_bn_act1_relu', 'conv_bn_act2_conv', ...]
    >>> names["3"], names["4"], len(names)
    ('global_avg_pool', 'linear', 8)
    """
    from nasir.backends.torch.lowering import prepare

    ops = {n.name: n.op.name for n in graph.nodes()}
    nodes = [n for n in prepare(graph).nodes() if n.op.name not in _UNNAMED]
    groups = _groups(nodes, ops, scopes or {})
    kinds = _kinds(nodes, groups)
    used = _reserved()
    out: dict[str, str] = {}
    for n in nodes:
        base = _identifier("_".join(p for p in (groups[n], kinds[n]) if p))
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        out[n.name] = name
    return out


def rename_lowered(module: Any, graph: Graph, names: Mapping[str, str]) -> Any:
    """A copy of the lowered fx ``module`` of ``graph`` with submodules, state dict keys and
    forward variables named by ``names`` (node name → identifier, from
    :func:`readable_names`). The submodules are shared, not copied: the copy computes the
    same numbers with the same tensors.

    >>> import torch
    >>> from nasir.backends.torch import lower
    >>> from nasir.text import parse_graph
    >>> g = parse_graph('''graph @tiny {
    ...   %x = input() {shape=[3, 8, 8]}
    ...   %1 = conv2d(%x) {out_channels=4}
    ...   %2 = relu(%1)
    ...   %3 = global_avg_pool(%2) {keepdims=false}
    ...   %4 = linear(%3) {out_features=2}
    ...   return %4
    ... }''')
    >>> m = lower(g, seed=0)
    >>> r = rename_lowered(m, g, readable_names(g))
    >>> list(r.state_dict())
    ['conv.weight', 'linear.weight', 'linear.bias']
    >>> print(r.code.strip().splitlines()[1])
        conv = self.conv(x);  x = None
    >>> x = torch.randn(2, 3, 8, 8)
    >>> torch.equal(r(x), m(x))
    True
    """
    import torch.fx as fx
    from torch import nn

    from nasir.backends.torch.lowering import _fx_name, prepare

    by_fx = {_fx_name(n): names[n.name] for n in prepare(graph).nodes() if n.name in names}
    root = nn.Module()
    for name, child in module.named_children():
        root.add_module(names.get(name, name), child)
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for old in module.graph.nodes:
        target = old.target
        if old.op == "call_module":
            target = names.get(target, target)
        want = target if old.op == "call_module" else by_fx.get(old.name, old.name)
        args = fx.map_arg(old.args, env.__getitem__)
        kwargs = fx.map_arg(old.kwargs, env.__getitem__)
        env[old] = new.create_node(old.op, target, args, kwargs, name=want)
    bad = sorted(k for k in names.values() if not k.isidentifier())
    if bad:
        raise BackendError(f"export names {bad[:3]} are not Python identifiers",
                           hint="report this: readable_names should make identifiers")
    return fx.GraphModule(root, new, class_name=type(module).__name__)
