"""A custom Trainer is found by every lookup route and built, seeded, from a config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pbt.config import validate_config
from pbt.errors import PbtError
from pbt.registry import build_trainer, registered_trainers, resolve_trainer

SYNTHETIC = Path(__file__).with_name("synthetic.py")


def test_builtin_is_registered_through_the_entry_point_group():
    assert registered_trainers()["mnist1d"] == "trainables.mnist1d:MNIST1DTrainer"
    assert resolve_trainer("mnist1d").__name__ == "MNIST1DTrainer"


def test_module_colon_class():
    assert resolve_trainer("synthetic:QuadraticTrainer").__name__ == "QuadraticTrainer"


def test_file_path_colon_class(tmp_path):
    copy = tmp_path / "my_trainer.py"
    shutil.copy(SYNTHETIC, copy)
    cls = resolve_trainer(f"{copy}:QuadraticTrainer")
    assert cls.__name__ == "QuadraticTrainer" and cls.__module__.startswith("pbt_user_my_trainer")


def test_entry_point_of_a_user_package(tmp_path, monkeypatch):
    # An installed distribution is a .dist-info folder on sys.path; write one by hand.
    shutil.copy(SYNTHETIC, tmp_path / "userplug.py")
    dist = tmp_path / "userplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pbt.trainables]\nquadratic = userplug:QuadraticTrainer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "quadratic" in registered_trainers()
    trainer = build_trainer(validate_config({"trainable": "quadratic", "trainer": {"dim": 3}}))
    assert type(trainer).__name__ == "QuadraticTrainer" and trainer.x.shape[1] == 3


def test_build_seeds_every_rng():
    config = validate_config({"trainable": "synthetic:QuadraticTrainer"})

    def weights_after_an_epoch(seed: int) -> torch.Tensor:
        trainer = build_trainer(config, seed=seed)
        trainer.train_epoch()  # the batch order comes from the seeded global RNG
        return trainer.model.weight.detach().clone()

    torch.testing.assert_close(weights_after_an_epoch(1), weights_after_an_epoch(1))
    assert not torch.equal(weights_after_an_epoch(1), weights_after_an_epoch(2))


def test_trainer_without_an_optimizer_is_refused(tmp_path):
    source = SYNTHETIC.read_text().replace("self.optimizer = torch.optim.SGD", "self.opt = torch.optim.SGD")
    (tmp_path / "broken.py").write_text(source)
    config = validate_config({"trainable": f"{tmp_path / 'broken.py'}:QuadraticTrainer"})
    with pytest.raises(PbtError, match="must set self.optimizer"):
        build_trainer(config)
