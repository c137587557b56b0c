"""The Trainer contract checked in the driver before anything starts.

A trainer that breaks the contract would otherwise be found inside Ray, by every member in turn
(each retried, each with its traceback), after the range test and with the experiment folder half
written. Here it is one `PbtError` line: the trainer is built, trains one step, evaluates once,
and its state goes through a checkpoint's round trip (`torch.save`, then `torch.load` with
`weights_only=True`), at the range test's smallest learning rate and with the seed set. The
driver's random state is put back afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pbt.config import ExperimentConfig
from pbt.errors import PbtError
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer, describe_exception, pick_device, shown_path
from pbt.trainer import Trainer, metrics_problem


def check_contract(config: ExperimentConfig) -> None:
    """Build the configured trainer, train one step, evaluate once and round-trip its state; a
    `PbtError` naming the trainable, what went wrong and where, at the first thing that does."""
    name = f"trainable: {_shown_spec(config.trainable)!r}"
    device = pick_device(config.resources.gpu > 0)
    with _driver_rng_kept(device):
        with _raised_in(name, "__init__"):
            trainer = build_trainer(config, device=device, seed=config.seed)
        set_hyperparams(trainer.optimizer, lr=config.lr_range.lr_min)
        _check_step(trainer, name)
        _check_evaluation(trainer, name)
        _check_round_trip(trainer, name)
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _check_step(trainer: Trainer, name: str) -> None:
    with _raised_in(name, "batches()"):
        epoch = iter(trainer.batches())
        try:
            batch = next(epoch, _NONE)
        finally:
            close = getattr(epoch, "close", None)
            if callable(close):  # a generator: its `finally` blocks run now
                close()
            del epoch  # a DataLoader's iterator: its worker processes stop
    if batch is _NONE:
        raise PbtError(f"{name} batches() at {_where(trainer.batches)} yielded no batch")
    with _raised_in(name, "train_step()"):
        loss = trainer.train_step(batch)
    at = f"train_step() at {_where(trainer.train_step)}"
    if isinstance(loss, torch.Tensor) and loss.numel() != 1:
        raise PbtError(f"{name} {at} returned a tensor of shape {list(loss.shape)}, not one loss: "
                       "return the batch's mean loss (loss.detach() or loss.item())")
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise PbtError(f"{name} {at} returned {_short(loss)}, not the loss: return loss.detach() or loss.item()") from None
    if not math.isfinite(value):
        raise PbtError(f"{name} {at} returned a loss of {value} on the first batch, before any update could make "
                       "it diverge: look for a NaN or inf in the data, the model or the loss")


def _check_evaluation(trainer: Trainer, name: str) -> None:
    with _raised_in(name, "evaluate()"):
        metrics = trainer.evaluate()
    at = f"evaluate() at {_where(trainer.evaluate)}"
    problem = metrics_problem(metrics)
    if problem:
        raise PbtError(f"{name} {at} {problem}")
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise PbtError(f"{name} {at} returned {key}={_short(value)}, not a number (a float or a 0-d tensor)") from None
        if key == "val_loss" and not math.isfinite(number):
            raise PbtError(f"{name} {at} returned val_loss={number} before any training: look for a NaN or inf "
                           "in the validation data, the model or the loss")
        if key in ("val_acc", "test_acc") and not 0.0 <= number <= 1.0:
            raise PbtError(f"{name} {at} returned {key}={number:g}: an accuracy is a fraction in [0, 1] (not a percentage)")


def _check_round_trip(trainer: Trainer, name: str) -> None:
    """What a checkpoint does: save the state, load it with `weights_only=True`, give it back."""
    with _raised_in(name, "state_dict()"):
        state = trainer.state_dict()
    at = f"state_dict() at {_where(trainer.state_dict)}"
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception as err:  # a lambda, a generator, an open file in the state
        raise PbtError(f"{name} {at} returned what torch.save cannot save: {describe_exception(err)}") from None
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, map_location=trainer.device, weights_only=True)
    except Exception as err:  # an object of a class of the user's, a NumPy array
        detail = str(err).strip().splitlines()
        reason = next((line.strip() for line in detail if "Unsupported global" in line or "GLOBAL" in line), detail[0] if detail else "")
        raise PbtError(
            f"{name} {at} returned what torch.load(weights_only=True) refuses ({reason}); a checkpoint holds "
            "tensors, numbers, strings and lists and dicts of them"
        ) from None
    with _raised_in(name, "load_state_dict()"):
        trainer.load_state_dict(loaded)


@contextlib.contextmanager
def _raised_in(name: str, what: str) -> Iterator[None]:
    """An exception of the user's code as one line: type, message and the user's file:line.
    A `PbtError` (a trainer's own, or pbt's) passes as it is; so does a KeyboardInterrupt."""
    try:
        yield
    except PbtError:
        raise
    except Exception as err:
        raise PbtError(f"{name} {what} raised {describe_exception(err)}") from None


@contextlib.contextmanager
def _driver_rng_kept(device: torch.device) -> Iterator[None]:
    """Python's, NumPy's and torch's random state as it was before: the check draws nothing from the run's."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def _where(method: Callable[..., Any]) -> str:
    """`file:line` of a method's definition (through decorators such as `torch.no_grad()`)."""
    function = inspect.unwrap(getattr(method, "__func__", method))
    code = getattr(function, "__code__", None)
    return f"{shown_path(code.co_filename)}:{code.co_firstlineno}" if code else getattr(function, "__qualname__", "?")


def _shown_spec(spec: str) -> str:
    target, sep, name = spec.rpartition(":")
    return f"{shown_path(target)}:{name}" if sep and target.endswith(".py") else spec


def _short(value: Any) -> str:
    text = repr(value).splitlines()[0] if repr(value) else ""
    return text if len(text) <= 60 else f"{text[:57]}..."


_NONE = object()
