"""One epoch of any `Trainer` under the experiment's schedule: the rate set before every step; and
the cooldown probe that ranks members by what they would reach if annealed now.

The rate of global step t is `schedule.at(t / T, hyperparams)` (`pbt.schedule`), written into the
optimizer's param groups as an explore step writes them. The steps are counted where the trainer
draws its batches: for this epoch, `trainer.batches` is wrapped so that each batch it yields is
preceded by its step's rate. A trainer whose own `train_epoch` never calls `batches()` trains the
whole epoch at the rate of its first step (`ScheduledEpoch.per_step` is then False).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pbt.optim import set_hyperparams
from pbt.schedule import ScheduleConfig
from pbt.trainer import Trainer, evaluation


@dataclass(frozen=True)
class ScheduledEpoch:
    """What an epoch under a schedule gave: the trainer's metrics, the mean rate its steps trained
    at, and whether the rate was set per step (False: once, for the whole epoch)."""

    metrics: dict[str, float]
    mean_lr: float
    per_step: bool


def train_scheduled_epoch(
    trainer: Trainer, schedule: ScheduleConfig, hyperparams: dict[str, Any], first_step: int, total_steps: int,
) -> ScheduledEpoch:
    """Train one epoch from global step `first_step` of `total_steps`, each step at the schedule's rate
    for a member with `hyperparams` (its peak lr, momentum and weight decay)."""
    if schedule.constant:
        return ScheduledEpoch(trainer.train_epoch(), hyperparams["lr"], per_step=True)
    rates: list[float] = []

    def apply(step: int) -> None:
        values = schedule.at(step / max(total_steps, 1), hyperparams)
        set_hyperparams(trainer.optimizer, **values)
        rates.append(values["lr"])

    apply(first_step)  # the whole epoch's rate if the trainer never draws from batches()
    own_batches = trainer.batches
    drawn = 0

    def batches() -> Iterator[Any]:
        nonlocal drawn
        for batch in own_batches():
            if drawn:
                apply(first_step + drawn)
            drawn += 1
            yield batch

    trainer.batches = batches  # an instance attribute: the class's method is untouched
    try:
        metrics = trainer.train_epoch()
    finally:
        del trainer.batches
    return ScheduledEpoch(metrics, sum(rates) / len(rates), per_step=drawn > 0)


@dataclass(frozen=True)
class Probe:
    """What a cooldown probe gave: the copy's validation accuracy and the steps it trained."""

    val_acc: float
    steps: int


def cooldown_probe(trainer: Trainer, start_lr: float, steps: int) -> Probe:
    """Train `trainer` for `steps` steps with its rate falling linearly from `start_lr` to zero, read
    its validation accuracy, and put its state (weights, optimizer, RNG) back as it was.

    Ranking members by their accuracy at a high, constant rate favours the lower rates, whose quick
    progress does not last (short-horizon bias, Wu et al. 2018); a short cooldown shows each member
    at what it would reach if annealed now. A trainer whose own `train_epoch` never draws from
    `batches()` probes for a whole epoch."""
    saved = copy.deepcopy(trainer.state_dict())
    own_batches = trainer.batches
    drawn = 0

    def batches() -> Iterator[Any]:
        nonlocal drawn
        for batch in own_batches():
            if drawn >= steps:
                return
            set_hyperparams(trainer.optimizer, lr=start_lr * (1 - drawn / steps))
            drawn += 1
            yield batch

    set_hyperparams(trainer.optimizer, lr=start_lr)  # what a trainer that never draws from batches() trains at
    trainer.batches = batches
    try:
        trainer.train_epoch()
        score = evaluation(trainer)["val_acc"]
    finally:
        del trainer.batches
        trainer.load_state_dict(saved)
    return Probe(score, drawn)
