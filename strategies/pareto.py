"""Pareto fronts and the 2-D hypervolume: moved to :mod:`nasir.pareto` (core), kept here.

Strategies and older code import these names from here; the definitions live in the core
so that the runtime and reports need nothing from the strategies to rank trials.

>>> pareto_front([(0.90, 30.0), (0.92, 50.0), (0.89, 40.0)], senses=("max", "min"))
[0, 1]
"""

from nasir.pareto import SENSES, ParetoArchive, dominates, hypervolume, pareto_front

__all__ = ["SENSES", "ParetoArchive", "dominates", "hypervolume", "pareto_front"]
