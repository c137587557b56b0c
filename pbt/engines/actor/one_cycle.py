"""The one-cycle baseline (Smith): one run whose learning rate rises to a peak and anneals, per batch.

PyTorch's `OneCycleLR` does the schedule; this module only fits it to a `Trainer`: it counts the
steps of the run, steps the schedule after every `train_step`, and checkpoints its state beside
the trainer's, so a restarted run continues the cycle where it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import OneCycleLR

from pbt.config import OneCycleConfig
from pbt.engines.actor.trainable import PBTMember
from pbt.optim import get_hyperparams
from pbt.schedule import ScheduleConfig
from pbt.trainer import Trainer, count_epoch_steps

SCHEDULE_FILE = "one_cycle.pt"


def attach_one_cycle(trainer: Trainer, settings: OneCycleConfig, max_lr: float, epochs: int) -> OneCycleLR:
    """Drive `trainer.optimizer` with `OneCycleLR` over `epochs`, stepped after each training batch."""
    group = trainer.optimizer.param_groups[0]
    schedule = OneCycleLR(
        trainer.optimizer,
        max_lr=max_lr,
        total_steps=epochs * count_epoch_steps(trainer),
        pct_start=settings.pct_start,
        div_factor=settings.div_factor,
        final_div_factor=settings.final_div_factor,
        # Momentum (Adam: beta1) cycles opposite to the learning rate where the optimizer has one.
        cycle_momentum="momentum" in group or "betas" in group,
        base_momentum=settings.base_momentum,
        max_momentum=settings.max_momentum,
    )
    train_step = trainer.train_step

    def train_step_then_schedule(batch: Any) -> torch.Tensor:
        loss = train_step(batch)
        if schedule.last_epoch < schedule.total_steps:  # the last batch of the run ends the cycle
            schedule.step()
        return loss

    trainer.train_step = train_step_then_schedule  # type: ignore[method-assign]
    return schedule


class OneCycleMember(PBTMember):
    """A trial that trains with `OneCycleLR` from `config["lr"]` as the peak; reports the lr it is at."""

    def _new_trainer(self, config: dict[str, Any]) -> Trainer:
        trainer = super()._new_trainer(config)
        self.schedule = attach_one_cycle(trainer, self.experiment.one_cycle, config["lr"], self.experiment.population.epochs)
        return trainer

    def hyperparams(self) -> dict[str, float]:
        return get_hyperparams(self.trainer.optimizer)

    @property
    def lr_schedule(self) -> ScheduleConfig:
        return ScheduleConfig()  # OneCycleLR sets the rate itself, step by step

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        super().save_checkpoint(checkpoint_dir)
        torch.save(self.schedule.state_dict(), Path(checkpoint_dir) / SCHEDULE_FILE)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        super().load_checkpoint(checkpoint_dir)
        self.schedule.load_state_dict(torch.load(Path(checkpoint_dir) / SCHEDULE_FILE, weights_only=True))
