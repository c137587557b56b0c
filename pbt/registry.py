"""Finding a Trainer class by name and building one from an experiment config.

A trainer is named by an entry point in the group `pbt.trainables` (the built-ins register
themselves there too), by `package.module:Class`, or by `path/to/file.py:Class`.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from pbt.config import ExperimentConfig, describe_validation_error
from pbt.errors import PbtError
from pbt.trainer import REQUIRED_METHODS, Trainer

ENTRY_POINT_GROUP = "pbt.trainables"


def registered_trainers() -> dict[str, str]:
    """Names registered under the `pbt.trainables` entry-point group, with their targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_trainer(spec: str) -> type[Trainer]:
    """The Trainer class named by `spec`; a `PbtError` that says why when it cannot be found."""
    registered = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if spec in registered:
        cls = registered[spec].load()
    elif ":" in spec:
        target, _, name = spec.rpartition(":")
        module = _load_file(target) if target.endswith(".py") else _import_module(target, spec)
        cls = getattr(module, name, None)
        if cls is None:
            raise PbtError(f"trainable: {target!r} has no class {name!r}, but the config names {spec!r}")
    else:
        known = ", ".join(sorted(registered)) or "none"
        raise PbtError(
            f"trainable: unknown trainer {spec!r}; use a registered name ({known}), "
            "package.module:Class or path/to/file.py:Class"
        )
    check_trainer_class(cls, spec)
    return cls


def check_trainer_class(cls: Any, spec: str) -> None:
    """Refuse anything that cannot honour the Trainer contract, naming what is missing."""
    if not isinstance(cls, type):
        raise PbtError(f"trainable: {spec!r} is not a class")
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(cls, name, None))]
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing or abstract:
        raise PbtError(
            f"trainable: {spec!r} lacks the Trainer methods {', '.join(missing or abstract)}; "
            "subclass pbt.Trainer and implement batches, train_step and evaluate"
        )


def trainer_settings(cls: type[Trainer], section: dict[str, Any]) -> dict[str, Any]:
    """The `trainer:` section validated by the class's own schema (if it declares one)."""
    if cls.config_model is None:
        return dict(section)
    try:
        return cls.config_model.model_validate(section).model_dump()
    except ValidationError as err:
        raise PbtError(describe_validation_error(err, cls.config_model, prefix="trainer.")) from None


def build_trainer(config: ExperimentConfig, device: torch.device | str = "cpu", seed: int | None = None) -> Trainer:
    """Seed every RNG, then construct the configured trainer on `device`."""
    cls = resolve_trainer(config.trainable)
    settings = trainer_settings(cls, config.trainer)
    seed_everything(config.seed if seed is None else seed)
    trainer = cls(settings, torch.device(device))
    if not isinstance(getattr(trainer, "optimizer", None), torch.optim.Optimizer):
        raise PbtError(f"trainable: {config.trainable!r} must set self.optimizer to a torch.optim.Optimizer in __init__")
    return trainer


def pick_device(want_gpu: bool) -> torch.device:
    """CUDA when a GPU was asked for and this process can see one, else the CPU."""
    if want_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _import_module(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise PbtError(f"trainable: no module named {name!r} (from {spec!r})") from None
        raise


def _load_file(path_text: str) -> Any:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise PbtError(f"trainable: file {path_text!r} does not exist")
    module_name = f"pbt_user_{path.stem}_{abs(hash(str(path))) & 0xFFFFFF:x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    spec.loader.exec_module(module)
    return module
