"""The schedule every arm shares: the shapes at their boundaries, rates set per step from the global
step alone, a mutated peak taking effect after an exploit, and a copier continuing at its donor's step."""

from __future__ import annotations

import math

import pytest
import synthetic
import torch
from ray import tune

from pbt.config import validate_config
from pbt.engines.actor.trainable import PBTMember
from pbt.engines.packed.model import PackedTrainer
from pbt.engines.scheduled import train_scheduled_epoch
from pbt.errors import PbtError
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer
from pbt.schedule import ScheduleConfig


@pytest.mark.parametrize("shape, points", [
    ("constant", {0.0: 1.0, 0.5: 1.0, 1.0: 1.0}),
    # Warmup from 0.04 to 1 over the first 30%, then cosine to 0.01: half-way down at 65%.
    ("one_cycle", {0.0: 0.04, 0.15: 0.52, 0.3: 1.0, 0.65: 0.505, 1.0: 0.01}),
    ("cosine", {0.0: 1.0, 0.5: 0.505, 1.0: 0.01}),
    # Stable until 80%, then linear to 0.01.
    ("wsd", {0.0: 1.0, 0.8: 1.0, 0.9: 0.505, 1.0: 0.01}),
])
def test_each_shape_at_its_boundaries(shape, points):
    schedule = ScheduleConfig(shape=shape)
    for progress, factor in points.items():
        assert schedule.factor(progress) == pytest.approx(factor), progress
    assert schedule.factor(-1.0) == schedule.factor(0.0) and schedule.factor(2.0) == schedule.factor(1.0)


def test_warmup_final_factor_and_cycled_momentum():
    schedule = ScheduleConfig(shape="wsd", warmup=0.1, start_factor=0.1, cooldown_start=0.5, final_factor=0.0,
                              cycle_momentum=True, max_momentum=0.95)
    assert schedule.factor(0.05) == pytest.approx(0.55)
    assert schedule.factor(0.1) == schedule.factor(0.5) == 1.0
    assert schedule.factor(1.0) == 0.0
    assert schedule.at(0.3, {"lr": 0.2, "momentum": 0.85}) == pytest.approx({"lr": 0.2, "momentum": 0.85})
    assert schedule.at(1.0, {"lr": 0.2, "momentum": 0.85}) == pytest.approx({"lr": 0.0, "momentum": 0.95})
    assert schedule.at(1.0, {"lr": 0.2, "momentum": 0.0}) == {"lr": 0.0}, "no momentum to cycle (Adagrad)"


def test_a_warmup_that_reaches_into_the_cooldown_is_refused():
    with pytest.raises(PbtError, match=r"schedule: the warmup must end before the cooldown starts.*warmup=0.9"):
        validate_config({"schedule": {"shape": "wsd", "warmup": 0.9}})
    with pytest.raises(PbtError, match="schedule.shape"):
        validate_config({"schedule": {"shape": "linear"}})


class RecordingTrainer(synthetic.QuadraticTrainer):
    """The quadratic, recording the rate of every step it takes."""

    def __init__(self, config, device):
        super().__init__(config, device)
        self.rates: list[float] = []

    def train_step(self, batch):
        self.rates.append(self.optimizer.param_groups[0]["lr"])
        return super().train_step(batch)


class OwnLoopTrainer(RecordingTrainer):
    """A trainer whose own `train_epoch` never calls `batches()`."""

    def train_epoch(self):
        for start in range(0, 64, 32):
            self.train_step((self.x[start:start + 32], self.y[start:start + 32]))
        return {"train_loss": 0.5}


def test_a_scheduled_epoch_sets_the_rate_of_every_step_from_the_global_step():
    trainer = RecordingTrainer({"samples": 128, "batch_size": 32}, torch.device("cpu"))  # 4 steps an epoch
    schedule = ScheduleConfig(shape="cosine", final_factor=0.0)
    done = train_scheduled_epoch(trainer, schedule, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}, 4, 8)
    expected = [0.1 * schedule.factor(step / 8) for step in range(4, 8)]
    assert trainer.rates == pytest.approx(expected)
    assert done.per_step and done.mean_lr == pytest.approx(sum(expected) / 4)
    assert "batches" not in vars(trainer), "the class's batches() is back"


def test_a_trainer_with_its_own_epoch_loop_gets_one_rate_per_epoch():
    trainer = OwnLoopTrainer({"samples": 128, "batch_size": 32}, torch.device("cpu"))
    schedule = ScheduleConfig(shape="cosine", final_factor=0.0)
    done = train_scheduled_epoch(trainer, schedule, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}, 4, 8)
    assert not done.per_step
    assert trainer.rates == pytest.approx([0.1 * schedule.factor(0.5)] * 2)


def scheduled_member(experiment, **hyperparams) -> PBTMember:
    cls = tune.with_parameters(PBTMember, experiment=experiment)
    return cls(config={"member": 0, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, **hyperparams})


def test_a_copier_continues_at_its_donors_step_with_its_own_mutated_peak(ray_session):
    experiment = validate_config({
        "trainable": f"{synthetic.__file__}:QuadraticTrainer", "trainer": {"samples": 128, "batch_size": 32},
        "search": {"lr": {"low": 0.01, "high": 0.2}}, "schedule": {"shape": "cosine", "final_factor": 0.0},
        "population": {"size": 2, "epochs": 4, "perturbation_interval": 2},
    })
    schedule = experiment.schedule
    donor, copier = scheduled_member(experiment, member=0, lr=0.1), scheduled_member(experiment, member=1, lr=0.05)
    for _ in range(2):
        first = donor.train()
    assert first["lr"] == 0.1 and first["lr_trained"] == pytest.approx(
        0.1 * sum(schedule.factor(step / 16) for step in range(4, 8)) / 4)
    copier.train()
    assert copier.reset({"member": 1, "lr": 0.12, "momentum": 0.0, "weight_decay": 0.0})
    copier.restore(donor.save())
    # The donor's epoch 3 (steps 8-11 of 16), at the copier's explored peak 0.12.
    result = copier.train()
    assert result["training_iteration"] == 3 and result["lr"] == 0.12
    assert result["lr_trained"] == pytest.approx(0.12 * sum(schedule.factor(step / 16) for step in range(8, 12)) / 4)
    assert [entry["epoch"] for entry in copier.history] == [1, 2, 3]
    assert math.isclose(copier.trainer.optimizer.param_groups[0]["lr"], 0.12), "checkpoints hold the peak"
    donor.stop()
    copier.stop()


def test_the_packed_and_actor_engines_apply_the_same_rates_to_the_same_member():
    """Members 0 and 1 packed, and each alone under `train_scheduled_epoch`: the same rate at every
    step (the pack's for each member, read where its optimizer steps) and the peaks put back after."""
    experiment = validate_config({"trainer": {"num_samples": 400, "width": 0.5, "batch_size": 32},
                                  "schedule": {"shape": "one_cycle", "cycle_momentum": True}})
    hyperparams = [{"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, {"lr": 0.02, "momentum": 0.85, "weight_decay": 0.0}]
    pack = PackedTrainer.build(experiment, [0, 1], hyperparams)
    packed_rates = []
    step = pack.train_step
    pack.train_step = lambda indices: (packed_rates.append(
        (pack.optimizer.lr.tolist(), pack.optimizer.momentum.tolist())), step(indices))[1]
    steps = len(pack.lead.x_train) // pack.lead.batch_size
    trained = pack.train_epoch(experiment.schedule, steps, 3 * steps)  # epoch 2 of 3
    for member, values in enumerate(hyperparams):
        alone = build_trainer(experiment, seed=member)
        set_hyperparams(alone.optimizer, **values)
        seen = []
        own_step = alone.train_step
        alone.train_step = lambda batch: (seen.append(
            (alone.optimizer.param_groups[0]["lr"], alone.optimizer.param_groups[0]["momentum"])), own_step(batch))[1]
        done = train_scheduled_epoch(alone, experiment.schedule, values, steps, 3 * steps)
        assert [rates[member] for rates, _ in packed_rates] == pytest.approx([lr for lr, _ in seen], rel=1e-6)
        assert [moms[member] for _, moms in packed_rates] == pytest.approx([m for _, m in seen], rel=1e-6)
        assert trained[member]["lr_trained"] == pytest.approx(done.mean_lr, rel=1e-6)
        assert pack.hyperparams(member) == pytest.approx(values), "the peaks are back after the epoch"
    assert len({lr for lr, _ in seen}) == steps, "one_cycle moves the rate at every step"
