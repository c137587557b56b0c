"""The Trainable around any Trainer: exploit really moves weights and optimizer state, divergence is contained."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import synthetic
import torch
from ray import tune

from pbt.config import validate_config
from pbt.engines.actor.trainable import METRIC, WORST_SCORE, PBTMember
from pbt.optim import get_hyperparams


def member(config, **hyperparams) -> PBTMember:
    cls = tune.with_parameters(PBTMember, experiment=config)
    return cls(config={"member": 0, "lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, **hyperparams})


def test_a_clone_takes_the_donors_weights_and_optimizer_state_but_keeps_its_explored_hyperparameters(
    ray_session, tiny_mnist1d
):
    config = validate_config({"trainer": tiny_mnist1d})
    donor = member(config, member=0, lr=0.05)
    clone = member(config, member=1, lr=0.01)
    for _ in range(2):
        donor.train()
    clone.train()
    saved = donor.save()

    explored = {"member": 1, "lr": 0.06, "momentum": 0.92, "weight_decay": 2e-4}
    assert clone.reset(explored)
    clone.restore(saved)

    for (name, mine), theirs in zip(clone.trainer.model.state_dict().items(), donor.trainer.model.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0, msg=name)
    donor_state = donor.trainer.optimizer.state_dict()["state"]
    clone_state = clone.trainer.optimizer.state_dict()["state"]
    assert donor_state.keys() == clone_state.keys() and donor_state
    for key in donor_state:
        torch.testing.assert_close(clone_state[key]["momentum_buffer"], donor_state[key]["momentum_buffer"])
    assert get_hyperparams(clone.trainer.optimizer) == pytest.approx({"lr": 0.06, "momentum": 0.92, "weight_decay": 2e-4})
    assert [h["member"] for h in clone.history] == [0, 0], "the clone inherits the donor's history"

    result = clone.train()
    assert result["training_iteration"] == 3 and result["lr"] == 0.06
    assert result["epochs_executed"] == 1 and result["compute_seconds"] > 0
    assert [h["member"] for h in clone.history] == [0, 0, 1]
    donor.stop()
    clone.stop()


def test_a_reused_actor_starts_a_new_trial_from_its_own_seed(ray_session, tiny_mnist1d):
    config = validate_config({"trainer": tiny_mnist1d})
    reused = member(config, member=0)
    reused.train()
    assert reused.reset({"member": 5, "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4})
    reused.train()  # no restore followed the reset: a fresh trial
    fresh = member(config, member=5, lr=0.02)
    fresh.train()
    for mine, theirs in zip(reused.trainer.model.parameters(), fresh.trainer.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert [h["member"] for h in reused.history] == [5]
    reused.stop()
    fresh.stop()


def test_a_diverged_member_reports_the_worst_score_and_stops_spending_compute(ray_session):
    config = validate_config({"trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer", "trainer": {"nan_above": 0.5}})
    runaway = member(config, lr=1.0, momentum=0.0)
    first = runaway.train()
    assert first["diverged"] and first[METRIC] == WORST_SCORE and first["epochs_executed"] == 1
    second = runaway.train()
    assert second["diverged"] and second["epochs_executed"] == 0 and math.isinf(second["train_loss"])
    runaway.stop()
