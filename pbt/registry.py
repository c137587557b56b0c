"""Finding a Trainer class by name and building one from an experiment config.

A trainer is named by an entry point in the group `pbt.trainables` (the built-ins register
themselves there too), by `package.module:Class`, or by `path/to/file.py:Class`. As Python does for
a script and for `python -m`, a file's own folder is put first on the import path before it runs
(so `from my_helpers import ...` beside it works), and so are the config's `python_path` folders
(the directory pbt was started in, for `package.module:Class`); every Ray worker does the same, as
it resolves the same spec and config.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import site
import sys
import sysconfig
import traceback
from collections.abc import Sequence
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


def resolve_trainer(spec: str, python_path: Sequence[str] = ()) -> type[Trainer]:
    """The Trainer class named by `spec`, with the `python_path` folders importable; a `PbtError`
    that says why when it cannot be found."""
    importable(python_path)
    registered = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if spec in registered:
        cls = registered[spec].load()
    elif ":" in spec:
        target, _, name = spec.rpartition(":")
        module = _load_file(target) if target.endswith(".py") else _import_module(target, spec, python_path)
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
    cls = resolve_trainer(config.trainable, config.python_path)
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


def importable(folders: Sequence[str]) -> None:
    """Put `folders` first on this process's import path, in their order (those already there stay where they are)."""
    missing = [folder for folder in folders if folder not in sys.path]
    if missing:
        sys.path[:0] = missing
        importlib.invalidate_caches()  # a folder written since the last import is searched afresh


def describe_exception(err: BaseException) -> str:
    """`Type: first line of the message at file:line`, the line being the innermost one of the user's
    code (not pbt's, nor a library's or the standard library's) that the exception passed through."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    if isinstance(err, SyntaxError) and err.filename:
        return f"{type(err).__name__}: {err.msg} at {shown_path(err.filename)}:{err.lineno}"
    frame = _innermost_user_frame(traceback.extract_tb(err.__traceback__))
    return f"{text} at {shown_path(frame.filename)}:{frame.lineno}" if frame else text


def shown_path(path: str | Path) -> str:
    """A path relative to the working directory when it is below it (as the user named it), else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _innermost_user_frame(frames: list[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    # The user's code: not pbt, not the standard library, not an installed package (unless only
    # installed packages are left: a trainer of an installed package of the user's).
    outside = [frame for frame in frames if not frame.filename.startswith("<") and not _under(frame.filename, _PBT_AND_STDLIB)]
    theirs = [frame for frame in outside if not _under(frame.filename, _INSTALLED)]
    return (theirs or outside or frames or [None])[-1]


def _under(filename: str, folders: tuple[str, ...]) -> bool:
    return os.path.realpath(filename).startswith(folders)


_PBT_AND_STDLIB = tuple(os.path.realpath(folder) + os.sep for folder in {
    str(Path(__file__).parent), sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_INSTALLED = tuple(os.path.realpath(folder) + os.sep for folder in {
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()})


def _import_module(name: str, spec: str, python_path: Sequence[str] = ()) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if not (err.name and (name == err.name or name.startswith(err.name + "."))):
            raise PbtError(f"trainable: importing {name!r} raised {describe_exception(err)}") from None
        places = [f"the current directory ({folder})" if folder == os.getcwd() else folder for folder in python_path]
        where = f"neither in {' or '.join(places)} nor" if places else "not"
        file = f"path/to/{name.replace('.', '/')}.py:{spec.rpartition(':')[2]}"
        raise PbtError(
            f"trainable: no module named {name!r} (from {spec!r}), {where} among the installed packages; "
            f"run pbt from the folder that holds {name.split('.')[0]}{'.py' if '.' not in name else ''}, "
            f"or name the file: {file}"
        ) from None
    except PbtError:
        raise
    except Exception as err:  # the module was found and failed as it ran: one line, where it failed
        raise PbtError(f"trainable: importing {name!r} raised {describe_exception(err)}") from None


def _load_file(path_text: str) -> Any:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise PbtError(f"trainable: file {path_text!r} does not exist")
    module_name = f"pbt_user_{path.stem}_{abs(hash(str(path))) & 0xFFFFFF:x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    importable([str(path.parent)])  # as for a script: `from my_helpers import ...` beside the file works
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[module_name]  # a later try runs the file again
        if isinstance(err, PbtError) or not isinstance(err, Exception):
            raise
        raise PbtError(f"trainable: importing {shown_path(path)} raised {describe_exception(err)}") from None
    return module
