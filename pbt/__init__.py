"""pbt: population-based training of PyTorch models on Ray Tune, seeded by an LR range test."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pbt import moved
from pbt.errors import PbtError

moved.install()  # experiments stopped before the package moved into layers still resume

# The public names, each imported from its module when first used (PEP 562): `import pbt`, and so
# every `pbt` command (`pbt --help` included), need not load torch or pydantic.
_LAZY = {
    "ExperimentConfig": ("pbt.config", "ExperimentConfig"),
    "load_config": ("pbt.config", "load_config"),
    "get_hyperparams": ("pbt.optim", "get_hyperparams"),
    "make_optimizer": ("pbt.optim", "make_optimizer"),
    "set_hyperparams": ("pbt.optim", "set_hyperparams"),
    "RangeResult": ("pbt.range_test.finder", "RangeResult"),
    "RangeTest": ("pbt.range_test.finder", "RangeTest"),
    "RangeSweep": ("pbt.range_test.finder", "RangeTest"),  # its name before `pbt sweep` took the word
    "find_lr_range": ("pbt.range_test.finder", "find_lr_range"),
    "record_curve": ("pbt.range_test.finder", "record_curve"),
    "TensorClassificationTrainer": ("pbt.trainer", "TensorClassificationTrainer"),
    "Trainer": ("pbt.trainer", "Trainer"),
}

if TYPE_CHECKING:
    from pbt.config import ExperimentConfig, load_config
    from pbt.optim import get_hyperparams, make_optimizer, set_hyperparams
    from pbt.range_test.finder import RangeResult, RangeTest, find_lr_range, record_curve
    from pbt.range_test.finder import RangeTest as RangeSweep
    from pbt.trainer import TensorClassificationTrainer, Trainer


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:  # AttributeError also lets `from pbt import <submodule>` import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # found here from now on, without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
