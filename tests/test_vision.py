"""The vision built-ins on files written in torchvision's real formats (nothing is downloaded)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from vision_files import write_cifar10, write_mnist

from pbt.cli import main
from pbt.config import validate_config
from pbt.engines.actor.trainable import gpu_memory
from pbt.registry import build_trainer
from pbt.reporting.progress import gpu_memory_line
from trainables.vision import random_crop_and_flip

REPO = Path(__file__).parents[1]
VISION_CONFIGS = ["mnist", "fashion_mnist", "cifar10_resnet20", "cifar10_resnet56"]


def cifar_config(data_dir: Path, **trainer) -> dict:
    return {"trainable": "cifar10", "trainer": {"data_dir": str(data_dir), "val_size": 20, "width": 0.25,
                                                 "batch_size": 16, **trainer}}


def test_a_cifar10_trainer_trains_and_reports_every_split(tmp_path):
    write_cifar10(tmp_path, per_batch=20, test=20)
    trainer = build_trainer(validate_config(cifar_config(tmp_path)))
    assert trainer.x_train.dtype == torch.uint8 and tuple(trainer.x_train.shape) == (80, 3, 32, 32)
    assert len(trainer.x_val) == 20 and len(trainer.x_test) == 20
    assert trainer.augment, "CIFAR-10 is augmented by default"
    losses = [trainer.train_epoch()["train_loss"] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    metrics = trainer.evaluate()
    assert set(metrics) == {"val_loss", "val_acc", "test_acc"} and 0 <= metrics["test_acc"] <= 1


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_trainers_learn_the_written_digits(tmp_path, dataset, folder):
    write_mnist(tmp_path, train=600, test=100, folder=folder)
    config = validate_config({"trainable": dataset, "trainer": {"data_dir": str(tmp_path), "val_size": 100,
                                                                 "batch_size": 32}})
    trainer = build_trainer(config)
    assert tuple(trainer.x_train.shape[1:]) == (1, 28, 28) and not trainer.augment
    before = trainer.evaluate()["val_acc"]
    for group in trainer.optimizer.param_groups:
        group.update(lr=0.05, momentum=0.9)
    for _ in range(8):
        trainer.train_epoch()
    assert trainer.evaluate()["val_acc"] > before + 0.2, "the written images are learnable by class"


def test_every_crop_is_a_window_of_the_padded_image_maybe_flipped():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    crops = random_crop_and_flip(images, padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped_seen = shifted_seen = False
    for image, crop in zip(padded, crops):
        windows = set()
        for dy in range(5):
            for dx in range(5):
                window = image[:, dy:dy + 8, dx:dx + 8]
                windows |= {(dy, dx, flip) for flip, view in ((False, window), (True, window.flip(2)))
                            if torch.equal(crop, view)}
        assert windows, "each crop is some window of its own padded image"
        flipped_seen |= all(flip for _, _, flip in windows)
        shifted_seen |= all((dy, dx) != (2, 2) for dy, dx, _ in windows)
    assert flipped_seen and shifted_seen, "both augmentations happen"


def test_the_cpu_reports_no_gpu_memory_and_the_gpu_line_reads_well():
    assert gpu_memory(torch.device("cpu")) == {}
    line = gpu_memory_line({"member": 3}, {"gpu_peak_mib": 1000.0, "gpu_total_mib": 81559.0})
    assert line.startswith("  [gpu] member 3: peak GPU memory 1000 MiB of 80 GiB after its first epoch")
    assert "by memory 81 such members fit" in line


@pytest.mark.parametrize("name", VISION_CONFIGS)
def test_the_vision_configs_are_valid_and_sized_for_one_gpu(name):
    config = validate_config(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))
    assert config.resources.gpu in (0.25, 0.5)
    assert config.trainer["batch_size"] >= 128
    assert config.lr_range.weight_decays == [1e-5, 1e-4, 1e-3]


@pytest.mark.slow
def test_one_short_pbt_round_on_written_cifar10_files(ray_session, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_cifar10(data, per_batch=20, test=20)
    config = tmp_path / "cifar.yaml"
    config.write_text(yaml.safe_dump({
        "name": "cifar", "trainable": "cifar10", "storage_path": str(tmp_path / "results"),
        "trainer": {"data_dir": "data", "val_size": 20, "width": 0.25, "batch_size": 16},
        "search": {"lr": {"low": 0.01, "high": 0.05}},
        "population": {"size": 2, "epochs": 2, "perturbation_interval": 1, "quantile_fraction": 0.5},
    }))
    out = io.StringIO()
    monkeypatch.chdir(tmp_path)  # data_dir is relative to where pbt starts
    with contextlib.redirect_stdout(out):
        code = main(["pbt", str(config)])
    assert code == 0, out.getvalue()
    lineage = json.loads((tmp_path / "results" / "cifar" / "lineage.json").read_text())
    assert len(lineage["best"]["schedule"]) == 2 and lineage["best"]["final_test_acc"] is not None
    saved = json.loads((tmp_path / "results" / "cifar" / "config.json").read_text())
    assert saved["trainer"]["data_dir"] == str(data), "workers get the folder made absolute where pbt started"
