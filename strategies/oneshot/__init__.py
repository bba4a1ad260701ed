"""One-shot and differentiable searches (ENAS, DARTS, FBNet, ProxylessNAS) and NetAdapt.

Each has a ``search(...) -> OneShotResult`` API ending in a discrete assignment; the
registry names (``darts``, ``enas``, ``fbnet``, ``proxylessnas``) wrap them as strategies
whose ``propose`` runs the search once (see :mod:`nasir.strategies.oneshot.common`).
"""

from nasir.strategies.oneshot.common import OneShotResult, OneShotStrategy, SearchData

__all__ = ["OneShotResult", "OneShotStrategy", "SearchData"]
