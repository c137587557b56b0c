"""Model families for `scripts/calibrate_range.py` that pbt does not ship, written as a user would.

Each takes the optimizer by name (`trainer.optimizer`), so `pbt sweep` can train it with all six.
They use MNIST-1D, generated offline; the seed CNN on images is the `mnist` built-in itself, on
digits that `render_digits` draws in MNIST's file format.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader, TensorDataset

from pbt import Trainer
from pbt.optim import make_optimizer
from trainables.mnist1d import MNIST1DConfig, MNIST1DTrainer


class MNIST1DMLPTrainer(MNIST1DTrainer):
    """MNIST-1D with the paper's MLP (two hidden layers of 100 at width 1), no convolution."""

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        settings = MNIST1DConfig.model_validate(config)
        hidden = max(1, round(100 * settings.width))
        self.model = torch.nn.Sequential(
            torch.nn.Linear(self.x_train.shape[1], hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10),
        ).to(device)
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(), nesterov=settings.nesterov)


class MNIST1DBatchNormTrainer(MNIST1DTrainer):
    """The MNIST-1D CNN with BatchNorm after every convolution."""

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        settings = MNIST1DConfig.model_validate(config)
        self.model = BatchNormConvNet(round(25 * settings.width), self.x_train.shape[1]).to(device)
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(), nesterov=settings.nesterov)


class BatchNormConvNet(torch.nn.Module):
    def __init__(self, channels: int, length: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for index, kernel in enumerate((5, 3, 3)):
            layers += [torch.nn.Conv1d(1 if index == 0 else channels, channels, kernel, stride=2, padding=1),
                       torch.nn.BatchNorm1d(channels), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(2, 1, length)).shape[1:].numel()
        self.classifier = torch.nn.Linear(flat, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


class LoaderTrainer(Trainer):
    """The MNIST-1D CNN fed by a shuffling `DataLoader` from host memory: no `steps_per_epoch`,
    `loss.item()` per step, no test split. It evaluates as the built-in does, on the same model."""

    config_model = MNIST1DConfig

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        settings = MNIST1DConfig.model_validate(config)
        self.built_in = MNIST1DTrainer(config, device)  # the same splits and model as the built-in
        self.built_in.x_test = self.built_in.y_test = None
        train = TensorDataset(self.built_in.x_train.cpu(), self.built_in.y_train.cpu())
        self.loader = DataLoader(train, batch_size=settings.batch_size, shuffle=True)
        self.model = self.built_in.model
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(), nesterov=settings.nesterov)

    def batches(self):
        return self.loader

    def train_step(self, batch):
        x, y = (t.to(self.device) for t in batch)
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def evaluate(self):
        return self.built_in.evaluate()


def render_digits(root: Path, train: int, test: int, seed: int = 0) -> None:
    """Digits 0-9 drawn in DejaVu Sans (matplotlib ships it) at random sizes, weights, slants,
    rotations and offsets, with noise, written as MNIST's idx files under `root/MNIST/raw`."""
    rng = np.random.default_rng(seed)
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = [fonts / name for name in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
                                       "DejaVuSansMono.ttf", "DejaVuSans-BoldOblique.ttf")]
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = np.stack([_digit(int(label), rng, faces) for label in labels])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())


def _digit(label: int, rng: np.random.Generator, faces: list[Path]) -> np.ndarray:
    font = ImageFont.truetype(str(faces[rng.integers(len(faces))]), int(rng.integers(14, 24)))
    canvas = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(canvas).text((20 + rng.integers(-3, 4), 20 + rng.integers(-3, 4)), str(label), fill=255,
                                font=font, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR).crop((6, 6, 34, 34))
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 30, (28, 28))
    return np.clip(pixels, 0, 255).astype(np.uint8)
