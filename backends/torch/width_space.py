"""The width space of a network: one decision per prunable layer (what NetAdapt searches
under the runner; a backend-level space because the layers are the torch backend's channel
groups, :mod:`~nasir.backends.torch.pruning`).

NetAdapt's proposals (the start network with some layers' filters cut) are not members of
the user's space. Under the runner they are members of a space *derived* from the start
network, built with the DSL: the start network expanded to primitive layers
(:func:`~nasir.backends.torch.lowering.prepare`), whose every prunable channel group
(:mod:`~nasir.backends.torch.pruning`) gets a value decision ``w_<group>`` (role
``width``) over the multiples of ``filter_step`` below its width, and its width. Node names
are the start network's, so a proposal's state-dict keys name the same layers as its
parent's and its weights can be cut from them. Reference ``start``: every layer at full
width.

A run of ``nasir search --space S --strategy netadapt`` stores this space as its space
(:func:`derived_spec`: spec :data:`SPEC` with the user's space as ``base``), so trials are
ordinary assignments — checked, hashed, stored, exported like any other.

>>> sp = build(base="tiny_mnasnet", start="small", input_shape=(1, 8, 8), num_classes=10)
>>> [(d.label, d.options) for d in sp.decisions][:3]
[('w_12', (8, 16)), ('w_18', (8,)), ('w_20', (8, 16, 24))]
>>> g = sp.instantiate(sp.reference("start").replace(w_12=8))
>>> c = layer_groups(sp, g)["w_12"]
>>> c.width, g.node(c.channelwise[1]).op.name
(8, 'depthwise_conv2d')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from nasir.backends.torch.pruning import ChannelGroup
from nasir.dsl import SpaceBuilder
from nasir.errors import SpecError
from nasir.graph import Graph
from nasir.ops import InputOp, Ref
from nasir.space import Space

__all__ = ["SPEC", "build", "derived_spec", "layer_groups", "width_options"]

#: the space spec of a NetAdapt run's width space
SPEC = "nasir.backends.torch.width_space:build"
#: strategy options that shape the width space (they go into its spec)
SPACE_OPTIONS = ("start", "filter_step", "layers")


def width_options(width: int, filter_step: int) -> tuple[int, ...]:
    """A layer's filter counts: the multiples of ``filter_step`` below ``width``, and it.

    >>> width_options(20, 8), width_options(8, 8), width_options(5, 8)
    ((8, 16, 20), (8,), (5,))
    """
    return tuple(sorted({*range(filter_step, width, filter_step), width}))


def _start(space: Space, start: str | Mapping[str, Any] | None) -> Any:
    if isinstance(start, str):
        return space.reference(start)
    if start is not None:
        return space.check(start, where="netadapt start")
    if space.references:
        return space.reference(next(iter(space.references)))
    return {d.label: max(d.options) if d.meta.role == "width"
            and all(isinstance(o, (int, float)) for o in d.options) else d.options[0]
            for d in space.decisions}


def build(base: str = "tiny_mnasnet", base_options: Mapping[str, Any] | None = None,
          start: str | Mapping[str, Any] | None = None, filter_step: int = 8,
          layers: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
          num_classes: int | None = None) -> Space:
    """The width space of ``start`` (a reference name or an assignment of ``base``;
    default its first reference, else its widest member) in space ``base`` built with
    ``base_options``; ``layers``: only these channel groups get a decision."""
    from nasir.backends.torch.lowering import prepare
    from nasir.backends.torch.pruning import channel_groups
    from nasir.spaces import build_space_spec

    if isinstance(filter_step, bool) or not isinstance(filter_step, int) or filter_step < 1:
        raise SpecError(f"netadapt width space: filter_step must be an int >= 1, got "
                        f"{filter_step!r}")
    space = build_space_spec(base, dict(base_options or {}), input_shape=input_shape,
                             num_classes=num_classes)[0]
    a = _start(space, start)
    g = prepare(space.instantiate(a))
    groups = {c.name: c for c in channel_groups(g)}
    if layers is not None:
        bad = [n for n in layers if n not in groups]
        if bad:
            raise SpecError(f"netadapt: no prunable layer {bad[0]!r} in this network",
                            hint=f"layers: {', '.join(groups)}")
        groups = {n: groups[n] for n in layers}
    label = {s: f"w_{c.name}" for c in groups.values() for s in c.sources}
    inp = g.inputs[0].op
    if not isinstance(inp, InputOp) or len(g.inputs) != 1:
        raise SpecError("netadapt: the start network must have one input")
    s = SpaceBuilder("netadapt_widths", input_shape=inp.shape)
    refs: dict[str, Any] = {}
    made = {g.inputs[0].name: s.input}
    for n in g.nodes():
        if n.name in made:
            continue
        op = n.op
        lb = label.get(n.name)
        if lb is not None:
            field = "out_features" if op.name == "linear" else "out_channels"
            width = getattr(op, field)
            if lb not in refs:
                with s.scope(layer=len(refs)):
                    refs[lb] = s.value(lb, width_options(width, filter_step), role="width")
            op = dataclasses.replace(op, **{field: refs[lb]})
        made[n.name] = s.op(op, *(made[i.name] for i in n.inputs), name=n.name)
    start_widths = {f"w_{c.name}": c.width for c in groups.values()}
    return s.build(made[g.output.name], references={"start": start_widths},
                   meta={"netadapt": {"base": space.name, "start": dict(a)}})


def layer_groups(space: Space, graph: Graph) -> dict[str, ChannelGroup]:
    """Decision label → the channel group it sets, in ``graph`` (a member of the width
    ``space``; instantiation renames nodes, so its names are matched to the space body's
    by position; ``graph`` is typed here if it is not)."""
    from nasir.backends.torch.lowering import prepare
    from nasir.backends.torch.pruning import channel_groups

    graph = graph if graph.is_typed() else prepare(graph)
    body, nodes = list(space.body.nodes()), list(graph.nodes())
    if [n.op.name for n in body] != [n.op.name for n in nodes]:
        raise SpecError(f"graph @{graph.name} is not a member of the width space {space.name}")
    named = {m.name: b for b, m in zip(body, nodes, strict=True)}
    out: dict[str, ChannelGroup] = {}
    for c in channel_groups(graph):
        ref = named[c.sources[0]].op.__dict__.get(
            "out_features" if named[c.sources[0]].op.name == "linear" else "out_channels")
        if isinstance(ref, Ref):
            out[ref.label] = c
    return out


def derived_spec(space: Mapping[str, Any], strategy_options: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(space config, strategy options)`` of a NetAdapt run over the user's ``space``
    config (``{"name", "options"}``): the width space of :data:`SPEC` with the user's as
    its base, and the strategy options left once those shaping the space moved into it.
    A config already naming the width space (a resumed run) comes back unchanged.

    >>> derived_spec({"name": "tiny_mnasnet", "options": {}}, {"start": "small", "pick": "ratio"})
    ({'name': 'nasir.backends.torch.width_space:build', 'options': \
{'base': 'tiny_mnasnet', 'base_options': {}, 'start': 'small'}}, {'pick': 'ratio'})
    """
    if space.get("name") == SPEC:
        return dict(space), dict(strategy_options)
    opts = dict(space.get("options") or {})
    inner = {k: opts.pop(k) for k in ("input_shape", "num_classes") if k in opts}
    out = {"base": space.get("name"), "base_options": opts, **inner}
    out |= {k: strategy_options[k] for k in SPACE_OPTIONS if k in strategy_options}
    rest = {k: v for k, v in strategy_options.items() if k not in SPACE_OPTIONS}
    return {"name": SPEC, "options": out}, rest
