"""Check a run before it starts: every option, the data, the space and one real batch.

:func:`prepare` is what ``nasir search`` and :func:`nasir.optimize` do before a run folder
exists, so a mistake costs one line and leaves nothing behind:

1. options of the estimator, data, strategy and evaluator are validated (pydantic: unknown
   or ill-typed names are one line listing the valid ones);
2. paths in the space, data and evaluator specs are made absolute (relative to the
   experiment file's folder, else the working folder) so resume works from anywhere;
3. the data is opened (a standard set missing offline says which files it expects where),
   and the space is built for its input shape and class count;
4. the evaluator is imported; the strategy and the reward are built;
5. one member of the space (its first reference, else a seeded sample) runs one
   forward/backward batch of the real data.

>>> from nasir.runtime.experiment import Experiment
>>> p = prepare(Experiment.from_dict({"space": {"name": "nb201"},
...     "estimator": {"kind": "nb201"}, "strategy": {"name": "random"}}))
>>> p.space.name, p.exp.space.options
('nb201', {})
>>> try:
...     prepare(Experiment.from_dict({"estimator": {"options": {"epocs": 3}}}))
... except NasirError as e:
...     print(e.message)
unknown training estimator option 'epocs'
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nasir.errors import NasirError
from nasir.runtime.experiment import DATA_ESTIMATORS, ConfigError, Experiment
from nasir.runtime.strategy_names import resolve_strategy, strategy_options
from nasir.space import Space
from nasir.userload import CodeSource, is_code_spec, resolve_spec_path

__all__ = ["Prepared", "prepare", "validate_options"]


@dataclass
class Prepared:
    """What :func:`prepare` found: the experiment with absolute paths and the data's shape in
    the space options, the built space, where the space's code came from, and the data."""

    exp: Experiment
    space: Space
    source: CodeSource | None = None
    data: Any = None
    notes: list[str] = field(default_factory=list)


def validate_options(cls: Any, options: Mapping[str, Any] | None, what: str,
                     where: str, defaults: Mapping[str, Any] | None = None) -> Any:
    """An instance of the dataclass ``cls`` from ``options`` (over ``defaults``), validated
    by pydantic; an unknown or ill-typed option is one :class:`ConfigError` naming it and
    the valid options.

    >>> from nasir.backends.torch.estimator import TrainConfig
    >>> validate_options(TrainConfig, {"epochs": "2"}, "training estimator", "x").epochs
    2
    """
    from pydantic import TypeAdapter, ValidationError

    names = [f.name for f in dataclasses.fields(cls)]
    opts = {**dict(defaults or {}), **dict(options or {})}
    for key in opts:
        if key not in names:
            raise ConfigError(f"unknown {what} option {key!r}", where=where,
                              hint=f"valid options: {', '.join(names)}")
    try:
        return TypeAdapter(cls).validate_python(opts)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"bad {what} option {loc}: {err['msg']}", where=where,
                          hint=f"valid options: {', '.join(names)}") from None
    except NasirError as e:
        raise ConfigError(f"bad {what} option: {e.message}", where=where,
                          hint=e.hint or f"valid options: {', '.join(names)}") from None


def _check_kwargs(fn: Any, options: Mapping[str, Any], what: str, where: str,
                  reserved: tuple[str, ...] = ()) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if n not in ("self", *reserved)
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in names:
            raise ConfigError(f"unknown {what} option {key!r}", where=where,
                              hint=f"valid options: {', '.join(names) or '(none)'}")


def _estimator_options(exp: Experiment) -> None:
    kind, opts = exp.estimator.kind, exp.estimator.options
    where = "estimator.options"
    if kind == "training":
        from nasir.backends.torch.estimator import TrainConfig
        from nasir.runtime.experiment import TRAINING_DEFAULTS

        validate_options(TrainConfig, opts, "training estimator", where, TRAINING_DEFAULTS)
    elif kind == "oneshot":
        from nasir.runtime.weight_sharing import OneShotConfig

        validate_options(OneShotConfig, opts, "oneshot estimator", where)
    elif kind == "shared":
        from nasir.backends.torch.estimator import TrainConfig
        from nasir.runtime.experiment import TRAINING_DEFAULTS
        from nasir.runtime.shared_weights import SharedConfig

        cfg = validate_options(SharedConfig, opts, "shared estimator", where)
        validate_options(TrainConfig, cfg.final_options, "training estimator (final)",
                         f"{where}.final_options", TRAINING_DEFAULTS)
    elif kind == "nb201":
        from nasir.runtime.estimators import NB201TableEstimator

        _check_kwargs(NB201TableEstimator.__init__, opts, "nb201 estimator", where)
    elif kind == "fault":
        from nasir.runtime.estimators import fault_estimator

        _check_kwargs(fault_estimator, opts, "fault estimator", where)
    elif kind == "evaluator" and opts:
        raise ConfigError("a user evaluator takes no estimator options", where=where,
                          hint="give its options under [evaluator] options (trial.options)")


def _training_device(exp: Experiment) -> None:
    """A run whose trials train on a device this machine lacks (``--device cuda`` without a
    GPU) stops here, not in every trial. One-shot strategies check theirs when built."""
    if exp.estimator.kind not in ("training", "oneshot", "evaluator"):
        return
    from nasir.backends.torch.device import resolve_device

    try:
        resolve_device(exp.device)
    except NasirError as e:
        raise ConfigError(e.message, where="device", hint=e.hint) from None


def _absolute(exp: Experiment, base_dir: str | None) -> Experiment:
    """Specs and paths made absolute so a run works from any folder."""
    over: dict[str, Any] = {}
    if is_code_spec(exp.space.name):
        over["space.name"] = resolve_spec_path(exp.space.name, base_dir)
    if exp.evaluator.function:
        over["evaluator.function"] = resolve_spec_path(exp.evaluator.function, base_dir)
    name = exp.data.name
    if name:
        kind, sep, rest = name.partition(":")
        if sep and kind in ("npz", "imagefolder"):
            over["data.name"] = f"{kind}:{os.path.abspath(os.path.join(base_dir or '.', rest))}"
        elif is_code_spec(name):
            over["data.name"] = resolve_spec_path(name, base_dir)
    root = exp.data.options.get("root")
    if isinstance(root, str):
        over["data.options"] = {**exp.data.options, "root": os.path.abspath(
            os.path.join(base_dir or ".", os.path.expanduser(root)))}
    return exp.merged(over) if over else exp


def _load_data(exp: Experiment) -> Any:
    name = exp.data_name
    if name is None:
        return None
    from nasir.backends.torch.datasets import check_data_options, load_data

    try:
        check_data_options(name, exp.data.options)
        return load_data(name, exp.data.options)
    except NasirError as e:
        raise NasirError(e.message, where=e.where or "data", hint=e.hint) from None


def check_latency_policy(exp: Experiment) -> None:
    """``latency.*`` (:func:`nasir.runtime.latency_policy.check_latency_policy`)."""
    from nasir.runtime.latency_policy import check_latency_policy as check

    check(exp)


def prepare(exp: Experiment, base_dir: str | None = None, *, smoke: bool = True) -> Prepared:
    """Check everything that can be checked before a run starts (see the module docstring)."""
    from nasir.spaces import build_space_spec

    exp = _derived_space(_absolute(exp, base_dir))
    _estimator_options(exp)
    check_latency_policy(exp)
    _training_device(exp)
    data = _load_data(exp)
    shape = classes = None
    if data is not None and exp.estimator.kind in DATA_ESTIMATORS:
        shape, classes = tuple(data.input_shape), int(data.num_classes)
    try:
        space, opts, source = build_space_spec(exp.space.name, exp.space.options,
                                               input_shape=shape, num_classes=classes)
    except NasirError as e:
        raise NasirError(e.message, where=e.where or f"space {exp.space.name}",
                         loc=e.loc, hint=e.hint, context=e.context) from None
    if opts != exp.space.options:
        exp = exp.merged({"space.options": opts})
    if exp.evaluator.function:
        from nasir.runtime.evaluator import load_evaluator

        load_evaluator(exp.evaluator.function)
    _strategy_and_reward(exp, space)
    if smoke and data is not None:
        smoke_batch(space, data, exp.seed)
    return Prepared(exp, space, source, data)


def _derived_space(exp: Experiment) -> Experiment:
    """A strategy that searches a space derived from the user's (NetAdapt: the start
    network's width space) has ``derived_space(space config, options)``: the run keeps the
    derived space (the user's is its base) and the options left for the strategy."""
    import importlib

    from nasir.strategies import STRATEGIES

    mod, _, cls = STRATEGIES[resolve_strategy(exp.strategy.name)].partition(":")
    derive = getattr(getattr(importlib.import_module(mod), cls), "derived_space", None)
    if derive is None:
        return exp
    space, opts = derive(exp.space.model_dump(mode="json"), exp.strategy.options)
    return exp.merged({"space.name": space["name"], "space.options": space["options"],
                       "strategy.options": opts})


def _strategy_and_reward(exp: Experiment, space: Space) -> None:
    import importlib

    from nasir.strategies import STRATEGIES, make_strategy
    from nasir.strategies.rewards import make_reward

    name = resolve_strategy(exp.strategy.name)
    mod, _, cls = STRATEGIES[name].partition(":")
    klass = getattr(importlib.import_module(mod), cls)
    _estimator_pairing(name, getattr(klass, "estimators", None), exp.estimator.kind)
    _check_kwargs(klass.__init__, exp.strategy.options, f"{name} strategy",
                  "strategy.options", reserved=("space", "seed", "objective"))
    try:
        s = make_strategy(name, space, seed=exp.seed, objective="reward",
                          **strategy_options(exp, name))
    except NasirError as e:
        raise ConfigError(f"bad {name} strategy option: {e.message}",
                          where="strategy.options", hint=e.hint) from None
    plan = getattr(s, "planned_trials", None)
    if plan is not None and exp.budget.trials < plan():
        raise ConfigError(f"strategy {name}'s search has {plan()} trials but the budget is "
                          f"{exp.budget.trials}: it would stop before its derived child",
                          where="budget.trials", hint=f"give --trials {plan()}, or fewer "
                          "epochs / controller steps with --strategy-opt")
    try:
        make_reward(exp.reward_spec())
    except NasirError as e:
        raise ConfigError(f"bad reward: {e.message}", where="reward", hint=e.hint) from None


def _estimator_pairing(name: str, kinds: tuple[str, ...] | None, kind: str) -> None:
    """A strategy that names the estimators its trials need (``Strategy.estimators``:
    NetAdapt's inherited weights, ENAS' shared ones) runs with one of them; the ``shared``
    estimator scores only the children of a strategy that names it
    (:func:`~nasir.runtime.shared_weights.check_shared_strategy`).

    >>> _estimator_pairing("random", None, "nb201")
    >>> try:
    ...     _estimator_pairing("enas", ("shared",), "nb201")
    ... except ConfigError as e:
    ...     print(e.message)
    strategy enas's trials are evaluated by the shared estimator, not with the nb201 \
estimator: they carry weights (inherited or shared) that only it reads
    """
    if kinds is not None and kind not in kinds:
        raise ConfigError(f"strategy {name}'s trials are evaluated by the "
                          f"{' or '.join(kinds)} estimator, not with the {kind} estimator: "
                          "they carry weights (inherited or shared) that only it reads",
                          where="estimator.kind",
                          hint=f"use --estimator {kinds[0]} (its options set the training)")
    if kind == "shared":
        from nasir.runtime.shared_weights import check_shared_strategy

        check_shared_strategy(name, kinds)


def _member(space: Space, seed: int) -> Any:
    if space.references:
        return space.reference(next(iter(space.references)))
    import numpy as np

    from nasir.passes.sampling import UniformSampler

    return UniformSampler(space).sample(np.random.default_rng(seed), 1)[0]


def smoke_batch(space: Space, data: Any, seed: int = 0, batch: int = 4) -> None:
    """One forward/backward batch of ``data``'s training split through one member of
    ``space``; a mismatch (shape, class count) or a crash is one :class:`NasirError`."""
    import torch
    import torch.nn.functional as F

    from nasir.backends.torch.lowering import lower

    a = _member(space, seed)
    where = f"space {space.name}, member {a.to_json()}"
    try:
        n = min(batch, len(data.train))
        items = [data.train[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    except Exception as e:
        raise NasirError(f"cannot read a batch of the data: {type(e).__name__}: {e}",
                         where="data") from None
    module = lower(space.instantiate(a), seed=0)
    try:
        out = module(x)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise NasirError(f"a batch of the data (shape {list(x.shape)}) does not go through "
                         f"the space: {type(e).__name__}: {msg[0] if msg else ''}",
                         where=where, hint="build the space for the data's input_shape "
                                           f"{list(data.input_shape)}") from None
    if isinstance(out, tuple):
        out = out[0]
    if out.dim() != 2 or out.shape[1] != int(data.num_classes):
        raise NasirError(f"the space outputs {list(out.shape[1:])} per sample but the data "
                         f"has {data.num_classes} classes", where=where,
                         hint="give the space function a num_classes parameter (the runner "
                              "passes the data's)")
    F.cross_entropy(out, y).backward()
