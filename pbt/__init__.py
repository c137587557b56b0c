"""pbt: population-based training of PyTorch models on Ray Tune, seeded by an LR range test."""

from pbt.config import ExperimentConfig, load_config
from pbt.errors import PbtError
from pbt.lr_range import RangeResult, RangeSweep, find_lr_range, record_curve
from pbt.optim import get_hyperparams, make_optimizer, set_hyperparams
from pbt.trainer import TensorClassificationTrainer, Trainer

__all__ = [
    "ExperimentConfig",
    "PbtError",
    "RangeResult",
    "RangeSweep",
    "TensorClassificationTrainer",
    "Trainer",
    "find_lr_range",
    "get_hyperparams",
    "load_config",
    "make_optimizer",
    "record_curve",
    "set_hyperparams",
]
