"""Packed populations: several members of one architecture trained as one vectorised model.

A 5k-weight CNN is bound by per-operation overhead, not arithmetic: K members stepped one after
the other pay that overhead K times. Here their weights, buffers and optimizer state are stacked
along a leading member dimension (`torch.func.stack_module_state`) and one `vmap` of
`functional_call` runs all of them, each on its own batch; `pbt.engines.packed.optim` steps them with
per-member hyperparameters. BatchNorm keeps per-member running statistics (its buffers are
stacked too) and dropout draws a different mask per member (`randomness="different"`).

This module is the engine's core, used in-process; `pbt.engines.packed.trainable` runs a pack as a Ray Tune
trial and `pbt.engines.packed.scheduler` runs PBT across packs.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from pbt.config import ExperimentConfig
from pbt.engines.packed.capture import StaticStep
from pbt.engines.packed.layers import fast_layers
from pbt.engines.packed.optim import PACKABLE_OPTIMIZERS, PackedOptimizer, flat_parameters
from pbt.optim import HYPERPARAMS, get_hyperparams, set_hyperparams
from pbt.registry import build_trainer
from pbt.schedule import ScheduleConfig
from pbt.trainer import TensorClassificationTrainer, Trainer

# What the packed engine does itself for every member at once: a trainer that overrides one of
# these trains in its own way, which one vmapped step cannot reproduce.
ENGINE_METHODS = ("batches", "train_step", "train_epoch", "evaluate", "forward", "steps_per_epoch")
# torch's optimizer classes by the names `pbt.optim.make_optimizer` gives them.
OPTIMIZER_NAMES = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw",
                   torch.optim.RMSprop: "rmsprop", torch.optim.Adagrad: "adagrad", torch.optim.Adadelta: "adadelta"}
# A pack keeps its lead member's data only: the others' copies are dropped as they are built.
DATA_ATTRIBUTES = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def packing_obstacle(cls: type[Trainer]) -> str | None:
    """Why members of trainer class `cls` cannot be packed, or None when they can.

    A pack runs `TensorClassificationTrainer`'s loop on stacked weights, so the class must be one
    and must leave that loop alone: its hooks `inputs` and `precision` and its `__init__` (data,
    model, optimizer) are its own, the rest is the engine's.
    """
    if not issubclass(cls, TensorClassificationTrainer):
        return f"{cls.__name__} is not a pbt.TensorClassificationTrainer"
    overridden = [name for name in ENGINE_METHODS if getattr(cls, name) is not getattr(TensorClassificationTrainer, name)]
    if overridden:
        return f"{cls.__name__} defines its own {', '.join(overridden)}"
    return None


def optimizer_obstacle(optimizer: torch.optim.Optimizer) -> str | None:
    """Why a trainer's optimizer cannot be packed, or None."""
    name = OPTIMIZER_NAMES.get(type(optimizer))
    if name is None:
        return f"its optimizer {type(optimizer).__name__} is not one of {', '.join(PACKABLE_OPTIMIZERS)}"
    return None


def vmap_obstacle(trainer: TensorClassificationTrainer) -> str | None:
    """Why `trainer`'s model cannot train in a pack, found by trying it: one packed training step
    of two copies of it and one packed evaluation batch (a model that calls `.item()` or branches
    on tensor values fails under `vmap`). None when both ran. `trainer` is left as it was."""
    group = trainer.optimizer.param_groups[0]
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    try:
        # Warnings here (vmap's performance notes) would be the trial's, not the run's: the run's
        # packs say them again where they train.
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pack = PackedTrainer([trainer, trainer], OPTIMIZER_NAMES[type(trainer.optimizer)],
                                 nesterov=bool(group.get("nesterov", False)))
            pack.train_step(next(pack.batch_indices())[:, :4])  # 4 examples each: a trial, not training
            with torch.no_grad():
                pack._loss_and_accuracy(trainer.x_val[:2], trainer.y_val[:2])
    except Exception as err:  # whatever the model raises under vmap is the reason, in one line
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"its model fails under torch.func.vmap ({type(err).__name__}: {message[:200]})"
    return None


class PackedModel:
    """K copies of one architecture as stacked parameters and buffers, called as one model."""

    def __init__(self, models: Sequence[torch.nn.Module]) -> None:
        self.size = len(models)
        self.params, self.buffers = stack_module_state(list(models))
        # The template holds the architecture only; the weights come in through functional_call.
        self.template = copy.deepcopy(models[0]).to("meta")
        if next(iter(self.params.values())).device.type == "cpu":
            # Per-operation overhead is what a CPU pack pays most for (GPU packs keep the layout
            # measured on GPUs): oneDNN's grouped convolutions are slow in vmap's layout, and so are
            # pooling and batch norm under vmap's rules; one (K, P) tensor behind every parameter
            # lets the optimizer step them all at once.
            fast_layers(self.template)
            self.params = flat_parameters(self.params) or self.params

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Every member's output: `x` is (K, batch, ...) with a batch per member, or with
        `shared` one (batch, ...) that every member sees (evaluation)."""
        run = vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="different")
        return run(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        """Member `target` takes `source`'s weights and buffers (an exploit inside the pack)."""
        for tensor in (*self.params.values(), *self.buffers.values()):
            tensor[target] = tensor[source]

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """One member as a plain model's `state_dict` (same keys), e.g. to move it to another pack."""
        return {name: tensor[member].detach().clone() for name, tensor in {**self.params, **self.buffers}.items()}

    @torch.no_grad()
    def load_member_state_dict(self, member: int, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in {**self.params, **self.buffers}.items():
            tensor[member] = state[name]


class PackedTrainer:
    """K members of a `TensorClassificationTrainer`: the lead member's data and input preparation,
    each member's own weights, hyperparameters, batches and metrics.

    `trainers` are built as the actor engine builds members (same class and settings, a seed each);
    their models are stacked, their optimizers' hyperparameters carried over. With `capture`, the
    training step runs on a static input buffer (`pbt.engines.packed.capture`): on CUDA captured
    once as a graph and replayed, elsewhere eagerly (the same arithmetic as without).
    """

    def __init__(
        self, trainers: Sequence[TensorClassificationTrainer], optimizer: str, nesterov: bool = False, capture: bool = False,
    ) -> None:
        self.lead = trainers[0]
        self.device = self.lead.device
        self.size = len(trainers)
        self.model = PackedModel([trainer.model for trainer in trainers])
        self.optimizer = PackedOptimizer(optimizer, list(self.model.params.values()), self.size, nesterov=nesterov)
        for member, trainer in enumerate(trainers):
            self.optimizer.set_hyperparams(member, **get_hyperparams(trainer.optimizer))
        self.capture = capture
        self.static_step: StaticStep | None = None  # built at the first step, for its batch shape

    @classmethod
    def build(
        cls, experiment: ExperimentConfig, members: Sequence[int], hyperparams: Sequence[dict[str, float]],
        device: torch.device | str = "cpu", capture: bool = False,
    ) -> PackedTrainer:
        """Members `members` of the experiment, built as the actor engine builds them (seed
        `experiment.seed + member`, so each starts from the same weights as it would alone), with
        `hyperparams` each. Only the first member's data is kept."""
        trainers = []
        for index, (member, values) in enumerate(zip(members, hyperparams, strict=True)):
            trainer = build_trainer(experiment, device=device, seed=experiment.seed + member)
            obstacle = packing_obstacle(type(trainer)) or optimizer_obstacle(trainer.optimizer)
            if obstacle:
                raise ValueError(f"members of {experiment.trainable!r} cannot be packed: {obstacle}")
            set_hyperparams(trainer.optimizer, **values)
            if index:
                for name in DATA_ATTRIBUTES:
                    if hasattr(trainer, name):
                        setattr(trainer, name, None)
            trainers.append(trainer)
        group = trainers[0].optimizer.param_groups[0]
        return cls(trainers, OPTIMIZER_NAMES[type(trainers[0].optimizer)], nesterov=bool(group.get("nesterov", False)),
                   capture=capture)

    @property
    def epoch_steps(self) -> int:
        """Steps in one epoch: what `batch_indices` yields."""
        return len(self.lead.x_train) // self.lead.batch_size

    def batch_indices(self) -> Iterator[torch.Tensor]:
        """One epoch: (K, batch) indices, each member in its own random order (ragged end dropped,
        as `TensorClassificationTrainer.batches` does)."""
        lead = self.lead
        count, batch = len(lead.x_train), lead.batch_size
        orders = torch.rand(self.size, count, device=lead.device).argsort(dim=1)
        for start in range(0, count - batch + 1, batch):
            yield orders[:, start : start + batch]

    def train_step(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and step for every member on its own batch; the (K,) losses, detached,
        and the (K,) counts of examples each member classified right."""
        if not self.capture:
            return self._step(indices)
        if self.static_step is None:
            self.static_step = StaticStep(self._step, indices, graphed=self.device.type == "cuda",
                                          before_capture=self.optimizer.zero_grad)
        if indices.shape != self.static_step.shape:  # another batch size than the graph's: eagerly
            return self._step(indices)
        return self.static_step(indices)

    @property
    def captured(self) -> bool:
        """Whether the training step is now a replayed CUDA graph."""
        return self.static_step is not None and self.static_step.graph is not None

    def _step(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = self.lead
        x, y = lead.x_train[indices], lead.y_train[indices]
        inputs = lead.inputs(x.flatten(0, 1), train=True).unflatten(0, indices.shape)
        self.model.train(True)
        with lead.precision():
            logits = self.model(inputs)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(indices.shape).mean(1)
        self.optimizer.zero_grad()
        # Each member's weights reach only its own loss: the sum's gradient is every member's own.
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach(), (logits.detach().argmax(dim=2) == y).sum(1)

    def train_epoch(self, schedule: ScheduleConfig | None = None, first_step: int = 0, total_steps: int = 1,
                    ) -> list[dict[str, float]]:
        """One epoch for every member: each member's mean training loss (NaN or inf if it diverged)
        and running training accuracy, as `TensorClassificationTrainer.train_epoch` reports them, and
        `lr_trained`, the mean rate of its steps. Under `schedule`, step s (global step
        `first_step + s` of `total_steps`) trains each member at its peak lr x the shape's factor,
        as `pbt.engines.scheduled` does for one member; the peaks are back in place afterwards."""
        total = torch.zeros(self.size, device=self.lead.device)
        correct = torch.zeros(self.size, device=self.lead.device, dtype=torch.long)
        steps = seen = 0
        scheduled = schedule is not None and not schedule.constant
        peaks = (self.optimizer.lr.clone(), self.optimizer.momentum.clone()) if scheduled else None
        factors = 0.0
        for indices in self.batch_indices():
            if scheduled:
                factors += self._apply_schedule(schedule, peaks, (first_step + steps) / max(total_steps, 1))
            losses, right = self.train_step(indices)
            total += losses
            correct += right
            steps += 1
            seen += indices.shape[1]
        lr = self.optimizer.lr.tolist()
        if scheduled:
            lr = (peaks[0] * (factors / max(steps, 1))).tolist()
            self.optimizer.lr.copy_(peaks[0])
            self.optimizer.momentum.copy_(peaks[1])
        losses, accuracies = (total / max(steps, 1)).tolist(), (correct.float() / max(seen, 1)).tolist()
        return [{"train_loss": loss, "train_acc": acc, "lr_trained": rate} for loss, acc, rate in zip(losses, accuracies, lr)]

    def _apply_schedule(self, schedule: ScheduleConfig, peaks: tuple[torch.Tensor, torch.Tensor], progress: float) -> float:
        """Every member's rate (and cycled momentum) at `progress`, written in place (a captured step
        reads the same tensors); returns the shape's factor."""
        factor = schedule.factor(progress)
        torch.mul(peaks[0], factor, out=self.optimizer.lr)
        if schedule.cycle_momentum:
            peak = peaks[1]
            high = peak.clamp(min=schedule.max_momentum)
            # A member without momentum (Adagrad, or momentum 0) keeps none.
            self.optimizer.momentum.copy_(torch.where(peak > 0, high - (high - peak) * factor, peak))
        return factor

    def cooldown_probe(self, start_factor: float, steps: int) -> list[float]:
        """Each member's validation accuracy after `steps` steps with its rate falling linearly from
        `start_factor` x its peak to zero; the pack (weights, optimizer, RNG) is then put back as it
        was. `pbt.engines.scheduled.cooldown_probe` does the same for one member and says why."""
        saved = _cloned(self.state_dict())
        peak = self.optimizer.lr.clone()
        try:
            for step, indices in zip(range(steps), self.batch_indices()):
                torch.mul(peak, start_factor * (1 - step / steps), out=self.optimizer.lr)  # in place: a captured step reads it
                self.train_step(indices)
            return [member["val_acc"] for member in self.evaluate()]
        finally:
            self.load_state_dict(saved)
            self.optimizer.lr.copy_(peak)

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Per member: `val_loss`, `val_acc` (and `test_acc` when the lead has a test split)."""
        lead = self.lead
        self.model.train(False)
        val_loss, val_acc = self._loss_and_accuracy(lead.x_val, lead.y_val)
        metrics = [{"val_loss": loss, "val_acc": acc} for loss, acc in zip(val_loss, val_acc)]
        if lead.x_test is not None and lead.y_test is not None:
            for member, acc in zip(metrics, self._loss_and_accuracy(lead.x_test, lead.y_test)[1]):
                member["test_acc"] = acc
        return metrics

    def _loss_and_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        lead = self.lead
        loss_sum = torch.zeros(self.size, device=lead.device)
        correct = torch.zeros(self.size, device=lead.device, dtype=torch.long)
        for start in range(0, len(x), lead.eval_batch_size):
            target = y[start : start + lead.eval_batch_size]
            with lead.precision():
                logits = self.model(lead.inputs(x[start : start + lead.eval_batch_size], train=False), shared=True)
            loss_sum += F.cross_entropy(logits.flatten(0, 1).float(), target.repeat(self.size), reduction="none").view(
                self.size, -1).sum(1)
            correct += (logits.argmax(dim=2) == target).sum(1)
        return (loss_sum / len(x)).tolist(), (correct.float() / len(x)).tolist()

    def hyperparams(self, member: int) -> dict[str, float]:
        return self.optimizer.get_hyperparams(member)

    def set_hyperparams(self, member: int, **values: float) -> None:
        self.optimizer.set_hyperparams(member, **{name: values[name] for name in HYPERPARAMS if name in values})

    def exploit(self, source: int, target: int) -> None:
        """Inside the pack: `target` takes `source`'s weights, buffers and optimizer state (not its
        hyperparameters, which explore sets next)."""
        self.model.copy_member(source, target)
        self.optimizer.copy_member(source, target)

    def member_state(self, member: int) -> dict[str, Any]:
        """One member's model and optimizer state, plain tensors (a checkpoint, or an exploit across packs)."""
        return {"model": self.model.member_state_dict(member), "optimizer": self.optimizer.member_state(member)}

    def load_member_state(self, member: int, state: dict[str, Any]) -> None:
        self.model.load_member_state_dict(member, state["model"])
        self.optimizer.load_member_state(member, state["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        """The whole pack (stacked tensors, plain types only: a `weights_only=True` load reads it),
        and the RNG streams that draw its batches, crops and dropout masks."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"params": dict(self.model.params), "buffers": dict(self.model.buffers),
                "optimizer": self.optimizer.state_dict(), "rng": rng}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for own, saved in ((self.model.params, state["params"]), (self.model.buffers, state["buffers"])):
            for name, tensor in own.items():
                tensor.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)


def _cloned(value: Any) -> Any:
    """A copy of a state whose tensors are copies too (a pack's `state_dict` holds the live ones)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _cloned(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cloned(item) for item in value)
    return value


def member_of(state: dict[str, Any], member: int) -> dict[str, Any]:
    """Slot `member` of a pack's `state_dict` as a `member_state`: what an exploit across packs
    reads from the donor pack's checkpoint."""
    optimizer = state["optimizer"]
    return {
        "model": {name: tensor[member] for name, tensor in {**state["params"], **state["buffers"]}.items()},
        "optimizer": {
            "optimizer": optimizer["optimizer"],
            "hyperparams": {name: values[member] for name, values in optimizer["hyperparams"].items()},
            "step": optimizer["step"][member],
            "state": [{key: tensor[member] for key, tensor in entry.items()} for entry in optimizer["state"]],
        },
    }
