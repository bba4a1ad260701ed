"""One-shot and differentiable searches (ENAS, DARTS, FBNet, ProxylessNAS) and NetAdapt.

Each has a ``search(...) -> OneShotResult`` API ending in a discrete assignment; the
registry names (``darts``, ``enas``, ``fbnet``, ``proxylessnas``) wrap them as strategies;
DARTS, FBNet and ProxylessNAS run their supernet search as a job of the runner and then
propose the derived children (see :mod:`nasir.strategies.oneshot.strategy`).
"""

from nasir.strategies.oneshot.common import OneShotResult, SearchData
from nasir.strategies.oneshot.strategy import OneShotStrategy

__all__ = ["OneShotResult", "OneShotStrategy", "SearchData"]
