"""The built-in MNIST-1D trainer: offline data, fixed splits, and real learning."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from pbt.config import validate_config
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer
from trainables.mnist1d import MNIST1DConvNet, load_mnist1d


def test_data_is_generated_once_then_read_from_the_cache(tmp_path):
    random.seed(5)
    np.random.seed(5)
    expected_draws = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    first = load_mnist1d(num_samples=500, cache_dir=str(tmp_path))
    assert (random.random(), np.random.rand()) == expected_draws, "generation must not reseed the caller's RNGs"
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1
    second = load_mnist1d(num_samples=500, cache_dir=str(tmp_path))
    for name in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(first[name], second[name])
    assert first["x"].shape == (400, 40) and first["x_test"].shape == (100, 40)
    assert set(np.unique(first["y"])) == set(range(10))


def test_splits_are_disjoint_and_sized_as_configured(tiny_mnist1d):
    trainer = build_trainer(validate_config({"trainer": {**tiny_mnist1d, "val_fraction": 0.25}}))
    assert (len(trainer.x_train), len(trainer.x_val), len(trainer.x_test)) == (600, 200, 200)
    train_rows = {tuple(row.tolist()) for row in trainer.x_train}
    assert not any(tuple(row.tolist()) in train_rows for row in trainer.x_val)


def test_width_multiplies_the_channels():
    narrow = sum(p.numel() for p in MNIST1DConvNet(width=1.0).parameters())
    wide = sum(p.numel() for p in MNIST1DConvNet(width=2.0).parameters())
    assert narrow == 5210  # the paper's CNN
    assert 3 * narrow < wide < 4 * narrow  # conv weights grow with the square of the width


def test_batches_cover_the_training_set_once_per_epoch(tiny_mnist1d):
    trainer = build_trainer(validate_config({"trainer": tiny_mnist1d}))
    batches = list(trainer.batches())
    assert len(batches) == trainer.steps_per_epoch() == len(trainer.x_train) // 16
    seen = torch.cat([x for x, _ in batches])
    assert len({tuple(r.tolist()) for r in seen}) == len(seen)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.03), ("adam", 0.01)])
def test_it_learns(optimizer, lr):
    trainer = build_trainer(validate_config({"trainer": {"optimizer": optimizer, "num_samples": 3000}}))
    set_hyperparams(trainer.optimizer, lr=lr, momentum=0.9)
    before = trainer.evaluate()
    for _ in range(8):
        metrics = trainer.train_epoch()
    after = trainer.evaluate()
    assert before["val_acc"] < 0.2 and after["val_acc"] > 0.5
    assert after["val_loss"] < before["val_loss"] and metrics["train_loss"] < 1.5
    assert 0.0 <= after["test_acc"] <= 1.0


def test_state_dict_round_trip_continues_identically(tiny_mnist1d):
    # Weights, momentum buffers and the RNG (batch order) all travel in the state dict.
    config = validate_config({"trainer": tiny_mnist1d})
    a = build_trainer(config)
    set_hyperparams(a.optimizer, lr=0.05)
    a.train_epoch()
    state = copy.deepcopy(a.state_dict())  # a state dict holds live tensors
    a.train_epoch()
    b = build_trainer(config, seed=99)
    b.load_state_dict(state)
    b.train_epoch()
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
