"""The `ray.tune.Trainable` that wraps any `Trainer`: one class for every population member.

Exploit copies weights, optimizer state and RNG state through checkpoints (plain state dicts,
read with `weights_only=True`). Actors are reused: `reset_config` writes the new hyperparameters
into the optimizer in place, so pausing, resuming and exploiting never start a process. Each
checkpoint also carries the member's *history*, the hyperparameters of every epoch its lineage
trained, so the best member's full schedule survives any number of exploits.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from pbt.config import ExperimentConfig
from pbt.engines.common import (
    METRIC,
    PROBE_EPOCHS,
    RANK_SCORE,
    STATE_FILE,
    WORST_SCORE,
    gpu_memory,
    improvement_score,
    load_member_state,
)
from pbt.engines.scheduled import cooldown_probe, train_scheduled_epoch
from pbt.optim import HYPERPARAMS, set_hyperparams
from pbt.registry import build_trainer, pick_device
from pbt.schedule import ScheduleConfig
from pbt.trainer import Trainer, count_epoch_steps, evaluation


class PBTMember(tune.Trainable):
    """A population member (or grid point): trains one epoch per `step`, reports, checkpoints."""

    def setup(self, config: dict[str, Any], experiment: ExperimentConfig | None = None, ranked: bool = False) -> None:
        self.experiment = experiment
        self.ranked = ranked  # a member of a PBT population (not a grid point): it may probe before a ranking
        self.device = pick_device(bool(ray.get_gpu_ids()) if ray.is_initialized() else False)
        self.trainer = self._new_trainer(config)
        self.epoch_steps: int | None = None  # counted at the first scheduled epoch
        self.history: list[dict[str, Any]] = []
        self.diverged = False
        self.fresh = False  # set when an actor is reused for a new trial; see reset_config
        # Several Ray nodes can share a host (and an IP): reports name the node itself.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def _new_trainer(self, config: dict[str, Any]) -> Trainer:
        experiment = self.experiment
        if "optimizer" in config:  # a grid over optimizers
            experiment = experiment.model_copy(update={"trainer": {**experiment.trainer, "optimizer": config["optimizer"]}})
        trainer = build_trainer(experiment, device=self.device, seed=experiment.seed + config.get("member", 0))
        set_hyperparams(trainer.optimizer, **{k: config[k] for k in HYPERPARAMS})
        return trainer

    def hyperparams(self) -> dict[str, float]:
        """The lr, momentum and weight decay this member trains with: its config's (lr: the schedule's peak)."""
        return {k: self.config[k] for k in HYPERPARAMS}

    @property
    def lr_schedule(self) -> ScheduleConfig:
        """The shape this member's rate follows over its budget (`schedule:` of the experiment)."""
        return self.experiment.schedule

    def _train_epoch(self) -> tuple[dict[str, float], float]:
        """One epoch at the schedule's rates from this member's global step (a copier's is its
        donor's: Tune hands the donor's `iteration` over with its checkpoint); the metrics and the
        mean rate trained at."""
        if self.lr_schedule.constant:
            return self.trainer.train_epoch(), self.hyperparams()["lr"]
        if self.epoch_steps is None:
            self.epoch_steps = count_epoch_steps(self.trainer)
        steps, epochs = self.epoch_steps, self.experiment.population.epochs
        done = train_scheduled_epoch(self.trainer, self.lr_schedule, self.hyperparams(), self.iteration * steps, epochs * steps)
        set_hyperparams(self.trainer.optimizer, **self.hyperparams())  # checkpoints hold the peak, as without a schedule
        return done.metrics, done.mean_lr

    def _rank_score(self, epoch: int, val_acc: float) -> tuple[float, float]:
        """What PBT ranks this member by after `epoch`, and the share of an epoch spent to know it:
        its validation accuracy, or at a perturbation with `population.probe` that of a cooldown
        probe from the rate it trains at now (see `pbt.engines.scheduled.cooldown_probe`)."""
        population = self.experiment.population
        if not self.ranked or self.diverged or epoch not in population.perturbation_epochs():
            return val_acc, 0.0
        if population.improvement_weight:
            return improvement_score(population, self.history, epoch, val_acc), 0.0
        if not population.probe:
            return val_acc, 0.0
        if self.epoch_steps is None:
            self.epoch_steps = count_epoch_steps(self.trainer)
        rate = self.lr_schedule.at(epoch / population.epochs, self.hyperparams())["lr"]
        probe = cooldown_probe(self.trainer, rate, max(1, round(population.probe * self.epoch_steps)))
        return probe.val_acc, (probe.steps / self.epoch_steps if probe.steps else 1.0)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        # Called for an exploit (a restore follows) and when a reused actor starts another
        # trial (no restore follows): defer the rebuild until we know which.
        set_hyperparams(self.trainer.optimizer, **{k: new_config[k] for k in HYPERPARAMS})
        self.fresh = True
        self.diverged = False
        return True

    def step(self) -> dict[str, Any]:
        if self.fresh:
            self._start_fresh()
        started = time.perf_counter()
        # A diverged member stops spending compute: it reports the worst score until replaced.
        executed = not self.diverged
        lr_trained = self.hyperparams()["lr"]
        if executed:
            metrics, lr_trained = self._train_epoch()
            self.diverged = not math.isfinite(metrics["train_loss"])
        if self.diverged:
            metrics = {"train_loss": math.inf, "val_loss": math.inf, METRIC: WORST_SCORE}
        else:
            metrics.update(evaluation(self.trainer))
        epoch = self.iteration + 1
        score, probe_epochs = self._rank_score(epoch, metrics[METRIC])
        seconds = time.perf_counter() - started
        hyperparams = self.hyperparams()
        self.history.append({"epoch": epoch, "member": self.config.get("member", 0), **hyperparams,
                             "lr_trained": lr_trained, METRIC: metrics[METRIC]})
        return {
            **metrics,
            **(gpu_memory(self.device) if self.iteration == 0 else {}),
            **hyperparams,
            "lr_trained": lr_trained,  # the mean rate of the epoch's steps: lr x the schedule's shape
            RANK_SCORE: score,
            PROBE_EPOCHS: probe_epochs,
            "diverged": self.diverged,
            # Budget is counted from these, never from training_iteration, which a clone inherits.
            "epochs_executed": int(executed),
            "compute_seconds": seconds,
            "node_id": self.node_id,
        }

    def _start_fresh(self) -> None:
        """A new trial on a reused actor: start from its own seed, not the last trial's weights."""
        if self.device.type == "cuda":  # give the last trial's GPU memory back before building anew
            del self.trainer
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.trainer = self._new_trainer(self.config)
        self.history = []
        self.fresh = False

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {
            "trainer": self.trainer.state_dict(),
            "history": self.history,
            "owner": self.trial_id,
            "diverged": self.diverged,
        }
        torch.save(state, Path(checkpoint_dir) / STATE_FILE)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        if self.fresh:  # the trial was exploited or resumed: its own state arrives here
            self.fresh = False
        state = load_member_state(checkpoint_dir, self.device)
        self.trainer.load_state_dict(state["trainer"])
        # The donor's optimizer state came with its hyperparameters; ours (explored) win.
        set_hyperparams(self.trainer.optimizer, **self.hyperparams())
        self.history = [dict(entry) for entry in state["history"]]
        self.diverged = bool(state["diverged"])
