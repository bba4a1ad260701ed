"""Which registered strategy a run asks for, and the options it is made with
(:mod:`~nasir.runtime.driver` re-exports them).
"""

from __future__ import annotations

from typing import Any

from nasir.errors import NasirError
from nasir.runtime.experiment import Experiment

__all__ = ["STRATEGY_ALIASES", "resolve_strategy", "strategy_options"]

#: CLI-friendly names for registered strategies
STRATEGY_ALIASES = {"evolution": "regularized_evolution", "re": "regularized_evolution"}


def resolve_strategy(name: str) -> str:
    """The registry name for ``name`` (aliases such as ``evolution`` resolved)."""
    from nasir.strategies import STRATEGIES

    if name in STRATEGIES:
        return name
    alias = STRATEGY_ALIASES.get(name)
    if alias and alias in STRATEGIES:
        return alias
    known = sorted(set(STRATEGIES) | {k for k, v in STRATEGY_ALIASES.items() if v in STRATEGIES})
    raise NasirError(f"unknown strategy {name!r}", where="--strategy",
                     hint=f"valid values: {', '.join(known)}")


def strategy_options(exp: Experiment, name: str) -> dict[str, Any]:
    """The options a strategy is made with: the experiment's, and for a one-shot search
    (which trains its supernet in the driver's process) the run's ``device`` unless given."""
    from nasir.strategies import STRATEGIES

    opts = dict(exp.strategy.options)
    if STRATEGIES.get(name, "").startswith("nasir.strategies.oneshot."):
        from nasir.runtime.data_parallel import strip_workers

        opts, _ = strip_workers(opts)  # the runner's option (data-parallel epochs)
        opts.setdefault("device", exp.device)
    return opts
