"""Tiny synthetic trainers with known answers, for fast and exact tests (no data set, no Ray)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from pbt.trainer import Trainer


class QuadraticTrainer(Trainer):
    """Noisy linear regression, loss = mean((x.w - y)^2) / 2 with x ~ N(0, scale^2 I).

    Targets scale with x, so the loss scales by scale^2 and the Hessian is scale^2 I: plain gradient
    descent is fastest at lr = 1/scale^2 and diverges above lr = 2/scale^2: a learning-rate optimum
    known in closed form. `loss_offset` shifts the loss (e.g. negative) without changing its
    gradients; `nan_above` makes the loss NaN once the learning rate exceeds it.
    """

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        gen = torch.Generator().manual_seed(config.get("data_seed", 0))
        dim, samples = config.get("dim", 8), config.get("samples", 4096)
        self.scale = config.get("scale", 1.0)
        self.x = torch.randn(samples, dim, generator=gen) * self.scale
        w_true = torch.randn(dim, generator=gen)
        self.y = self.x @ w_true + 0.05 * self.scale * torch.randn(samples, generator=gen)
        self.batch_size = config.get("batch_size", 32)
        self.offset = config.get("loss_offset", 0.0)
        self.nan_above = config.get("nan_above", math.inf)
        self.model = torch.nn.Linear(dim, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.0)

    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x))
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        loss = 0.5 * ((self.model(x).squeeze(1) - y) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.optimizer.param_groups[0]["lr"] > self.nan_above:
            return torch.tensor(math.nan)
        return loss.detach() + self.offset

    def train_epoch(self) -> dict[str, float]:
        # Also say which hyperparameters the optimizer really trained with (replay tests read it).
        metrics = super().train_epoch()
        group = self.optimizer.param_groups[0]
        return {**metrics, "lr_used": group["lr"], "momentum_used": group["momentum"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        error = self.model(self.x).squeeze(1) - self.y
        return {"val_loss": float(0.5 * (error**2).mean()), "val_acc": float((error.abs() < 0.1).float().mean())}


class AdagradQuadraticTrainer(QuadraticTrainer):
    """The quadratic trained with Adagrad that no setting names: a user's trainer that builds its own optimizer."""

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=0.01)


class PlateauTrainer(QuadraticTrainer):
    """A loss on a plateau: it starts to fall only once the learning rates of the steps so far add up
    to `plateau`, falls by `gain` per unit beyond, and climbs once the rate passes 1; plus seeded
    noise of sd `noise`. An exponential sweep's sum of rates below 1 doubles with its length, so a
    short sweep may stay on the plateau where a longer one falls off it (Adagrad's on MNIST-1D did).
    """

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        self.plateau, self.gain = config.get("plateau", 8.0), config.get("gain", 1.0)
        self.noise = config.get("noise", 0.05)
        self.travelled = 0.0

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        lr = self.optimizer.param_groups[0]["lr"]
        self.travelled += min(lr, 1.0)
        fall = self.gain * max(self.travelled - self.plateau, 0.0)
        climb = 10.0 * max(lr - 1.0, 0.0)
        return torch.tensor(3.0 - fall + climb) + self.noise * torch.randn(())
