"""PyTorch backend: lowering of concrete graphs, training estimator, weight-sharing supernets.

>>> from nasir.backends.torch import lower
>>> callable(lower)
True
"""

from nasir.backends.torch.data import DataSplits, digits_splits
from nasir.backends.torch.droppath import DropPath, ScheduledDropPath, drop_path_operands
from nasir.backends.torch.estimator import (
    LearningCurveStopper,
    TrainConfig,
    TrainingEstimator,
    TrainResult,
)
from nasir.backends.torch.lowering import (
    INITS,
    expression_hashes,
    load_weights,
    lower,
    lowerable_ops,
    prepare,
)
from nasir.backends.torch.memory import (
    MemoryEstimate,
    ResourceError,
    check_memory,
    measure_training_step,
    predict_training_memory,
)
from nasir.backends.torch.supernet import MODES, Supernet
from nasir.backends.torch.transforms import scale_width, set_resolution

__all__ = [
    "INITS",
    "MODES",
    "DataSplits",
    "DropPath",
    "LearningCurveStopper",
    "MemoryEstimate",
    "ResourceError",
    "ScheduledDropPath",
    "Supernet",
    "TrainConfig",
    "TrainResult",
    "TrainingEstimator",
    "check_memory",
    "digits_splits",
    "drop_path_operands",
    "expression_hashes",
    "load_weights",
    "lower",
    "lowerable_ops",
    "measure_training_step",
    "predict_training_memory",
    "prepare",
    "scale_width",
    "set_resolution",
]
