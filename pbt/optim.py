"""The optimizers pbt knows and how learning rate, momentum and weight decay map onto them.

The orchestrator changes hyperparameters by writing `param_groups` in place, never by building a
new optimizer, so an explore step keeps the optimizer state (momentum buffers, Adam moments).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

import torch

OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)

HYPERPARAMS = ("lr", "momentum", "weight_decay")

# Adagrad and Adadelta have no momentum: `set_hyperparams` ignores it and `get_hyperparams` reads
# back 0, so pbt neither searches nor shows it for them (`has_momentum`).
HAS_MOMENTUM = ("sgd", "adam", "adamw", "rmsprop")

log = logging.getLogger(__name__)


def make_optimizer(
    name: OptimizerName,
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Build one of the six optimizers of the seed experiment with the given hyperparameters."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def has_momentum(optimizer: str | None) -> bool:
    """Whether momentum does anything for `optimizer`, a `trainer.optimizer` setting.

    Only pbt's own momentum-less optimizers say no: a trainer without that setting (None) or with
    an optimizer pbt does not build keeps its momentum.
    """
    return optimizer not in OPTIMIZERS or optimizer in HAS_MOMENTUM


def shown_hyperparams(records: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The hyperparameters worth a column or a plot for these records (schedule entries, runs):
    all of `HYPERPARAMS`, less momentum where every record has 0, which is no momentum (an optimizer
    without one, or plain SGD): a row of zeros would suggest it was searched."""
    if any(record["momentum"] for record in records):
        return HYPERPARAMS
    return tuple(name for name in HYPERPARAMS if name != "momentum")


def set_hyperparams(optimizer: torch.optim.Optimizer, **values: float | None) -> None:
    """Write lr / momentum / weight_decay into every param group, in place.

    Momentum goes to `momentum` where the optimizer has one (SGD, RMSprop) and to `betas[0]` for
    Adam-style optimizers; optimizers with neither (Adagrad, Adadelta) ignore it. `None` leaves a
    value as it is.
    """
    unknown = set(values) - set(HYPERPARAMS)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {HYPERPARAMS}")
    for group in optimizer.param_groups:
        for name, value in values.items():
            if value is None:
                continue
            if name == "momentum":
                _set_momentum(group, float(value))
            elif name in group:
                _set_scalar(group, name, float(value))
            else:
                _warn_missing(optimizer, name)


def get_hyperparams(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The hyperparameters of the first param group, momentum read as `set_hyperparams` writes it."""
    group = optimizer.param_groups[0]
    momentum = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    return {"lr": float(group["lr"]), "momentum": float(momentum), "weight_decay": float(group.get("weight_decay", 0.0))}


_warned: set[tuple[str, str]] = set()


def _warn_missing(optimizer: torch.optim.Optimizer, name: str) -> None:
    # An optimizer without weight decay (Rprop, LBFGS) would silently ignore a key written into
    # its param groups: say once that this hyperparameter has no effect rather than pretend.
    key = (type(optimizer).__name__, name)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s has no %s: the %s pbt searches has no effect on it", key[0], name, name)


def _set_scalar(group: dict, name: str, value: float) -> None:
    # Some optimizers hold lr as a tensor (capturable/fused modes); fill it, don't replace it.
    if isinstance(group[name], torch.Tensor):
        group[name].fill_(value)
    else:
        group[name] = value


def _set_momentum(group: dict, value: float) -> None:
    if "betas" in group:
        group["betas"] = (value, *group["betas"][1:])
    elif "momentum" in group:
        if group.get("nesterov") and value <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0, but got 0")
        group["momentum"] = value
