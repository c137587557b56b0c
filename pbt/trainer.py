"""The Trainer plug-in contract, and a default classification loop over tensors on the device.

A user writes a `Trainer` without importing Ray. The same object runs in the LR range test, in a
PBT population, in a grid point and in a replay; pbt owns everything else (hyperparameters,
checkpoints, scheduling). Hyperparameters are written into `self.optimizer.param_groups` by pbt,
so a trainer builds its optimizer once, with any initial values.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from pbt.errors import PbtError

REQUIRED_METHODS = ("batches", "train_step", "evaluate", "state_dict", "load_state_dict")


class Trainer(abc.ABC):
    """Builds model, data and optimizer from `config`; trains an epoch; evaluates; saves state.

    Subclasses set `self.model` and `self.optimizer` in `__init__` and implement `batches`,
    `train_step` and `evaluate`. `config_model`, if given, is a pydantic model that validates the
    `trainer:` section of the experiment config (unknown keys rejected, defaults filled in).
    """

    config_model: ClassVar[type[BaseModel] | None] = None

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        self.config = config
        self.device = device

    @abc.abstractmethod
    def batches(self) -> Iterator[Any]:
        """One epoch of training batches, in a fresh random order each call."""

    @abc.abstractmethod
    def train_step(self, batch: Any) -> torch.Tensor:
        """Forward, backward and optimizer step on one batch; returns the detached loss.

        Return the loss tensor rather than `.item()`: a per-step host sync slows GPU training.
        """

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics on held-out data: at least `val_loss` and `val_acc`; `test_acc` if there is a test split."""

    def steps_per_epoch(self) -> int | None:
        """Batches in one epoch, if known cheaply; else pbt counts them (see `count_epoch_steps`)."""
        return None

    def train_epoch(self) -> dict[str, float]:
        """One pass over `batches()`; returns the mean training loss (NaN or inf if it diverged)."""
        total = torch.zeros((), device=self.device)
        steps = 0
        for batch in self.batches():
            # A float (`loss.item()`) or an undetached loss works too; detaching stops a graph per
            # step from being kept alive by the running sum.
            loss = self.train_step(batch)
            total += loss.detach() if isinstance(loss, torch.Tensor) else loss
            steps += 1
        return {"train_loss": (total / max(steps, 1)).item()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimizer state and RNG state."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)


def evaluation(trainer: Trainer) -> dict[str, float]:
    """`trainer.evaluate()` checked against the contract: `val_loss` and `val_acc` present, every
    value a plain float (a tensor or NumPy scalar is converted), `test_acc` only if reported."""
    metrics = trainer.evaluate()
    problem = metrics_problem(metrics)
    if problem:
        raise PbtError(f"{type(trainer).__name__}.evaluate() {problem}")
    return {name: float(value) for name, value in metrics.items()}


def metrics_problem(metrics: Any) -> str | None:
    """What is wrong with what `evaluate()` returned (`returned [...], without val_acc: ...`), or None."""
    if not isinstance(metrics, Mapping):
        return (f"returned {type(metrics).__name__}, not a dict: it must return at least val_loss and val_acc "
                "(and test_acc if there is a test split)")
    missing = [name for name in ("val_loss", "val_acc") if name not in metrics]
    if missing:
        return (f"returned {sorted(map(str, metrics))}, without {' and '.join(missing)}: "
                "it must return at least val_loss and val_acc (and test_acc if there is a test split)")
    return None


def count_epoch_steps(trainer: Trainer) -> int:
    """Batches in one epoch: `steps_per_epoch()`, else `len(batches())` (a `DataLoader` has one),
    else one pass over `batches()` without training. The RNG streams are put back afterwards, so
    counting does not change the batches training will see (a `DataLoader` draws a seed per pass)."""
    steps = trainer.steps_per_epoch()
    if steps is not None:
        return steps
    with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
        epoch = trainer.batches()
        try:
            return len(epoch)  # type: ignore[arg-type]
        except TypeError:  # a generator: count it
            return sum(1 for _ in epoch)


class TensorClassificationTrainer(Trainer):
    """A classification loop for data small enough to live on the device as tensors.

    Subclasses fill `x_train, y_train, x_val, y_val` (and optionally `x_test, y_test`), `model`,
    `optimizer` and `batch_size`. Batches are index slices of a `randperm`, with no DataLoader:
    for small data the loader's per-batch overhead costs more than the model.
    """

    batch_size: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    eval_batch_size: int = 4096

    @classmethod
    def cuda_pack_obstacle(cls, settings: dict[str, Any]) -> str | None:
        """Why members built from `settings` (the `trainer:` section) cannot be packed on CUDA, in
        one line, or None: a subclass whose settings pick kernels that fail under `vmap` there
        says so, and the packed engine then trains one member per process."""
        return None

    def steps_per_epoch(self) -> int:
        return len(self.x_train) // self.batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x_train)
        order = torch.randperm(n, device=self.device)
        # Drop the ragged last batch so every step sees the same batch size (and the same noise).
        for start in range(0, n - self.batch_size + 1, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def inputs(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """What the model takes, from a batch of the stored inputs: subclasses convert, normalise
        or augment here (the packed engine calls it on all members' batches at once)."""
        return x

    def precision(self) -> contextlib.AbstractContextManager:
        """The context the model runs in, e.g. autocast; none by default."""
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """The logits of a batch of the stored inputs."""
        with self.precision():
            return self.model(self.inputs(x, train))

    def train_epoch(self) -> dict[str, float]:
        """The mean training loss and `train_acc`: the share of the epoch's training examples the
        model classified right as it trained on them (a running accuracy, as Keras reports it)."""
        self._correct = torch.zeros((), device=self.device, dtype=torch.long)
        self._seen = 0
        metrics = super().train_epoch()
        if self._seen:  # a subclass with its own train_step may not count
            metrics["train_acc"] = (self._correct.float() / self._seen).item()
        return metrics

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self.forward(x, train=True)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if hasattr(self, "_correct"):  # counted on the device: no host sync per step
            self._correct += (logits.detach().argmax(dim=1) == y).sum()
            self._seen += len(y)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        val_loss, val_acc = self._loss_and_accuracy(self.x_val, self.y_val)
        metrics = {"val_loss": val_loss, "val_acc": val_acc}
        if self.x_test is not None and self.y_test is not None:
            metrics["test_acc"] = self._loss_and_accuracy(self.x_test, self.y_test)[1]
        self.model.train(was_training)
        return metrics

    def _loss_and_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(x), self.eval_batch_size):
            logits = self.forward(x[start : start + self.eval_batch_size], train=False)
            target = y[start : start + self.eval_batch_size]
            loss_sum += F.cross_entropy(logits.float(), target, reduction="sum")
            correct += (logits.argmax(dim=1) == target).sum()
        return (loss_sum / len(x)).item(), (correct.float() / len(x)).item()
