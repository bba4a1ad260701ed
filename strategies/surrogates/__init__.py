"""Surrogate models shared by model-based strategies, and the numba scoring kernel.

* :mod:`~nasir.strategies.surrogates.models`: MLP ensemble and ridge (numpy training).
* :mod:`~nasir.strategies.surrogates.deep`: deep MLP ensembles with an L1 loss (BANANAS).
* :mod:`~nasir.strategies.surrogates.sequence`: LSTM / MLP ensembles over token sequences
  (PNAS).
* :mod:`~nasir.strategies.surrogates.tables`: MACs / latency lookup tables over indices.
* :mod:`~nasir.strategies.surrogates.kernel`: the fused batched scorer.
* :mod:`~nasir.strategies.surrogates.data`: training sets from results, bounded scorers.
"""

from nasir.strategies.surrogates.deep import DeepEnsemble
from nasir.strategies.surrogates.kernel import Scorer, Scores, cache_dir, onehot
from nasir.strategies.surrogates.models import (
    SURROGATES,
    MLPEnsemble,
    MLPWeights,
    Ridge,
    make_surrogate,
)
from nasir.strategies.surrogates.sequence import SequenceEnsemble
from nasir.strategies.surrogates.tables import (
    TermTable,
    additive_terms,
    layer_latency_from_lut,
    lut_terms,
    metric_terms,
    mnasnet_terms,
    proxy_latency_ms,
)

__all__ = [
    "SURROGATES",
    "DeepEnsemble",
    "MLPEnsemble",
    "MLPWeights",
    "Ridge",
    "Scorer",
    "Scores",
    "SequenceEnsemble",
    "TermTable",
    "additive_terms",
    "cache_dir",
    "layer_latency_from_lut",
    "lut_terms",
    "make_surrogate",
    "metric_terms",
    "mnasnet_terms",
    "onehot",
    "proxy_latency_ms",
]
