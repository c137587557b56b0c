"""A Trainer written the way a stranger writes one, not the way pbt's built-ins are.

It iterates a `DataLoader` (no `steps_per_epoch()`), has BatchNorm, no test split, NAdam, returns
`loss.item()` from `train_step` and tensors from `evaluate()`. `GeneratorStrangerTrainer.batches()`
is a generator, so the length of its epoch can only be found by a pass over it.
1200 training samples in batches of 32 make a short epoch: 38 steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pbt import Trainer


class StrangerTrainer(Trainer):
    def __init__(self, config, device):
        super().__init__(config, device)
        generator = torch.Generator().manual_seed(0)  # the same data for every member
        x = torch.randn(1500, 10, generator=generator)
        y = (x @ torch.randn(10, 3, generator=generator)).argmax(1)
        self.loader = DataLoader(TensorDataset(x[:1200], y[:1200]), batch_size=32, shuffle=True)
        self.x_val, self.y_val = x[1200:].to(device), y[1200:].to(device)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(10, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 3)
        ).to(device)
        self.optimizer = torch.optim.NAdam(self.model.parameters(), lr=1e-3)

    def batches(self):
        return self.loader

    def train_step(self, batch):
        x, y = (t.to(self.device) for t in batch)
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def evaluate(self):
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x_val)
        self.model.train()
        return {"val_loss": F.cross_entropy(logits, self.y_val), "val_acc": (logits.argmax(1) == self.y_val).float().mean()}


class GeneratorStrangerTrainer(StrangerTrainer):
    def batches(self):
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)
