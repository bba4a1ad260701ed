"""Search strategies behind one propose/feedback contract (see :mod:`nasir.strategies.base`)."""

from nasir.strategies.base import (
    STRATEGIES,
    Strategy,
    make_strategy,
    register_strategy,
    strategy_names,
)

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "register_strategy", "strategy_names"]
