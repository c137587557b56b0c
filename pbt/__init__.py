"""pbt: population-based training of PyTorch models on Ray Tune, seeded by an LR range test."""

from pbt import moved
from pbt.config import ExperimentConfig, load_config
from pbt.errors import PbtError
from pbt.optim import get_hyperparams, make_optimizer, set_hyperparams
from pbt.range_test.finder import RangeResult, RangeTest, find_lr_range, record_curve
from pbt.trainer import TensorClassificationTrainer, Trainer

moved.install()  # experiments stopped before the package moved into layers still resume
RangeSweep = RangeTest  # its name before `pbt sweep` took the word

__all__ = [
    "ExperimentConfig",
    "PbtError",
    "RangeResult",
    "RangeSweep",
    "RangeTest",
    "TensorClassificationTrainer",
    "Trainer",
    "find_lr_range",
    "get_hyperparams",
    "load_config",
    "make_optimizer",
    "record_curve",
    "set_hyperparams",
]
