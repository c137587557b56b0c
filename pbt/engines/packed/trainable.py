"""A pack of population members as one Ray Tune trial: K members trained as one vectorised model.

The trial's config names its members (`members`, their identities and seeds) and each one's
hyperparameters (`hyperparams`, a list in the same order). Every `step` trains one epoch of every
member and reports them all under `members`; callbacks read them one by one through
`member_reports`, so `reports.jsonl`, TensorBoard and progress look as they do for actors.

In a population (the trainable is given a `board`), a pack that has trained to a perturbation epoch
offers its scores and state to `pbt.engines.packed.scheduler.PlanBoard` at the start of its next step and
gets back its moves: which slots take which member's weights and optimizer state, from this pack
(an index copy) or another (its offered state). It reports what it applied (`exploits`), so the
exploit log holds what happened.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from pbt.config import ExperimentConfig
from pbt.engines.common import (
    MEMBERS,
    METRIC,
    PACK_FILE,
    PROBE_EPOCHS,
    RANK_SCORE,
    WORST_SCORE,
    gpu_memory,
    improvement_score,
    load_pack_state,
)
from pbt.engines.packed.capture import capture_wanted
from pbt.engines.packed.model import PackedTrainer, member_of
from pbt.errors import PbtError
from pbt.registry import pick_device


class PackTrial(tune.Trainable):
    """K members of one architecture: one epoch each per `step`, one checkpoint for the pack."""

    def setup(self, config: dict[str, Any], experiment: ExperimentConfig | None = None, board: str | None = None) -> None:
        self.experiment, self.board = experiment, board
        self.device = pick_device(bool(ray.get_gpu_ids()) if ray.is_initialized() else False)
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        experiment = self.experiment
        if "optimizer" in config:  # a grid over optimizers: each pack holds one optimizer's points
            experiment = experiment.model_copy(update={"trainer": {**experiment.trainer, "optimizer": config["optimizer"]}})
        self.members = list(config["members"])
        capture = capture_wanted(experiment.population.capture, self.device)
        self.pack = PackedTrainer.build(experiment, self.members, config["hyperparams"], self.device, capture=capture)
        self.histories: list[list[dict[str, Any]]] = [[] for _ in self.members]
        self.plan_epoch = 0  # the perturbation whose moves this pack applied last
        self.scores = [WORST_SCORE] * len(self.members)  # each member's score at the last epoch
        for slot, values in enumerate(config["hyperparams"]):
            self.pack.set_hyperparams(slot, **values)
        self.fresh = False

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        # A reused actor: the same pack resuming (its checkpoint is restored next) or another
        # pack, which needs its own members built (another size, other seeds).
        if list(new_config["members"]) != self.members:
            if self.device.type == "cuda":  # give the last pack's memory back before building anew
                del self.pack
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(self.device)
            self._build(new_config)
        self.fresh = True  # cleared by a restore; a new trial starts from its seeds instead
        return True

    def step(self) -> dict[str, Any]:
        if self.fresh:
            self._build(self.config)
        applied = self._exchange()
        started = time.perf_counter()
        trained = self._train_epoch()
        evaluations = self.pack.evaluate()
        epoch = self.iteration + 1
        probes, probe_epochs = self._probe(epoch)
        by_improvement = self._ranks_by_improvement(epoch)
        seconds = time.perf_counter() - started
        reports = []
        for slot, member in enumerate(self.members):
            hyperparams = self.pack.hyperparams(slot)
            diverged = not math.isfinite(trained[slot]["train_loss"])
            # A diverged member reports the worst score, so that PBT replaces it first. It cannot stop
            # computing as an actor does (the pack steps all members), and it cannot harm the others:
            # no operation mixes members.
            metrics = ({"train_loss": math.inf, "val_loss": math.inf, METRIC: WORST_SCORE} if diverged
                       else {**trained[slot], **evaluations[slot]})
            self.histories[slot].append({"epoch": epoch, "member": member, **hyperparams,
                                         "lr_trained": trained[slot]["lr_trained"], METRIC: metrics[METRIC]})
            score = metrics[METRIC] if probes is None or diverged else probes[slot]
            if by_improvement and not diverged:
                score = improvement_score(self.experiment.population, self.histories[slot], epoch, score)
            self.scores[slot] = score if math.isfinite(score) else WORST_SCORE
            reports.append({
                "member": member, **metrics, **hyperparams, "diverged": diverged, RANK_SCORE: self.scores[slot],
                # Compute stays per member: each executed this epoch, for its share of the pack's time.
                "epochs_executed": 1, PROBE_EPOCHS: probe_epochs, "compute_seconds": seconds / len(self.members),
            })
        # Dicts, not lists: Tune's own TensorBoard logger flattens dicts and warns on lists.
        return {
            METRIC: max(report[METRIC] for report in reports),
            MEMBERS: {str(slot): report for slot, report in enumerate(reports)},
            "exploits": {str(index): move for index, move in enumerate(applied)},
            **(self._gpu_report() if self.iteration == 0 else {}),
            "pack_seconds": seconds,
            "node_id": self.node_id,
        }

    def _train_epoch(self) -> list[dict[str, float]]:
        """One epoch of every member at the schedule's rates from the pack's global step (every
        member of a pack, and of the population, is at the same epoch: packed PBT is synchronous)."""
        schedule, epochs = self.experiment.schedule, self.experiment.population.epochs
        if schedule.constant:
            return self.pack.train_epoch()
        steps = self.pack.epoch_steps
        return self.pack.train_epoch(schedule, self.iteration * steps, epochs * steps)

    def _probe(self, epoch: int) -> tuple[list[float] | None, float]:
        """Before a ranking with `population.probe`: each member's validation accuracy after a short
        cooldown from the rate it trains at now (`PackedTrainer.cooldown_probe`), and the share of an
        epoch that took; else (None, 0)."""
        population = self.experiment.population
        if self.board is None or not population.probe or epoch not in population.perturbation_epochs():
            return None, 0.0
        steps = max(1, round(population.probe * self.pack.epoch_steps))
        factor = self.experiment.schedule.factor(epoch / population.epochs)
        return self.pack.cooldown_probe(factor, steps), steps / self.pack.epoch_steps

    def _ranks_by_improvement(self, epoch: int) -> bool:
        """Whether this epoch's ranking adds each member's rise (`population.improvement_weight`)."""
        population = self.experiment.population
        return self.board is not None and bool(population.improvement_weight) and epoch in population.perturbation_epochs()

    def _gpu_report(self) -> dict[str, Any]:
        """After the first epoch on CUDA: the peak memory, and whether the step is replayed as a graph."""
        if self.device.type != "cuda":
            return {}
        return {**gpu_memory(self.device), "step_captured": self.pack.captured}

    def _exchange(self) -> list[dict[str, Any]]:
        """At a perturbation: offer this pack's members to the board, wait for every pack, apply the moves."""
        epoch, population = self.iteration, self.experiment.population
        if self.board is None or epoch not in population.perturbation_epochs():
            return []
        if self.plan_epoch >= epoch:
            return []
        members = [{"slot": slot, "member": member, "score": score, "hyperparams": self.pack.hyperparams(slot)}
                   for slot, (member, score) in enumerate(zip(self.members, self.scores))]
        state = ray.put(_to_cpu({"members": self.members, "pack": self.pack.state_dict(), "histories": self.histories}))
        moves = ray.get(ray.get_actor(self.board).exchange.remote(self.config["pack"], epoch, members, [state]))
        for move in moves:
            if move["state"] is None:  # inside the pack: an index copy
                self.pack.exploit(move["donor_slot"], move["slot"])
                history = self.histories[move["donor_slot"]]
            else:
                donor = ray.get(move["state"][0])
                self.pack.load_member_state(move["slot"], member_of(donor["pack"], move["donor_slot"]))
                history = donor["histories"][move["donor_slot"]]
            self.histories[move["slot"]] = [dict(entry) for entry in history]
            self.pack.set_hyperparams(move["slot"], **move["hyperparams"])
        self.plan_epoch = epoch
        # What the log needs, not the donor's state: the report goes to the driver.
        return [{key: value for key, value in move.items() if key != "state"} for move in moves]

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {
            "members": self.members,
            "pack": self.pack.state_dict(),
            "histories": self.histories,
            "plan_epoch": self.plan_epoch,
            "scores": self.scores,
            "epoch": self.iteration,
            "owner": self.trial_id,
        }
        torch.save(state, Path(checkpoint_dir) / PACK_FILE)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.fresh = False
        state = load_pack_state(checkpoint_dir, self.device)
        if list(state["members"]) != self.members:
            raise PbtError(f"checkpoint {checkpoint_dir!r} holds members {state['members']}, this pack {self.members}")
        self.pack.load_state_dict(state["pack"])
        self.histories = [[dict(entry) for entry in history] for history in state["histories"]]
        self.plan_epoch = int(state["plan_epoch"])
        self.scores = [float(score) for score in state["scores"]]


def _to_cpu(value: Any) -> Any:
    """A copy with every tensor on the CPU (what another process, on any device, can read)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()  # ray.put copies it at once
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    return value
