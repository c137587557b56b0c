"""The one-cycle baseline: PyTorch's OneCycleLR fitted to a Trainer, per batch, resumable."""

from __future__ import annotations

import pytest
import synthetic
import torch

from pbt.config import OneCycleConfig
from pbt.engines.actor.one_cycle import attach_one_cycle
from pbt.optim import get_hyperparams
from pbt.trainer import count_epoch_steps

DEVICE = torch.device("cpu")


def run_epochs(trainer, epochs):
    seen = []
    for _ in range(epochs):
        for batch in trainer.batches():
            seen.append(get_hyperparams(trainer.optimizer))
            trainer.train_step(batch)
    return seen


def test_lr_rises_to_the_peak_and_anneals_while_momentum_cycles_opposite():
    torch.manual_seed(0)
    trainer = synthetic.QuadraticTrainer({"samples": 320, "batch_size": 32}, DEVICE)
    settings = OneCycleConfig(pct_start=0.3, div_factor=25, final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
    attach_one_cycle(trainer, settings, max_lr=0.5, epochs=3)
    seen = run_epochs(trainer, 3)
    lrs = [s["lr"] for s in seen]
    momenta = [s["momentum"] for s in seen]
    assert len(seen) == 30
    assert lrs[0] == pytest.approx(0.5 / 25)
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.5, rel=1e-3) and 7 <= peak <= 9  # 30% of 30 steps
    assert lrs[-1] < 0.5 / 25 / 1e3
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85, abs=1e-3)
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))  # rises, then
    assert all(a >= b - 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1 :]))  # falls


def test_a_restored_schedule_continues_the_cycle():
    settings = OneCycleConfig()
    first = synthetic.QuadraticTrainer({"samples": 320}, DEVICE)
    schedule = attach_one_cycle(first, settings, max_lr=0.5, epochs=2)
    run_epochs(first, 1)
    saved_trainer, saved_schedule = first.state_dict(), schedule.state_dict()
    expected = run_epochs(first, 1)

    second = synthetic.QuadraticTrainer({"samples": 320}, DEVICE)
    resumed = attach_one_cycle(second, settings, max_lr=0.5, epochs=2)
    second.load_state_dict(saved_trainer)
    resumed.load_state_dict(saved_schedule)
    assert [s["lr"] for s in run_epochs(second, 1)] == pytest.approx([s["lr"] for s in expected])


class UncountedTrainer(synthetic.QuadraticTrainer):
    def steps_per_epoch(self):
        return None


def test_steps_are_counted_from_batches_without_touching_the_rng():
    trainer = UncountedTrainer({"samples": 100, "batch_size": 32}, DEVICE)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert count_epoch_steps(trainer) == 3
    assert torch.equal(torch.get_rng_state(), before)
