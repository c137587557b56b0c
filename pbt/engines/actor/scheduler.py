"""Ray Tune's PopulationBasedTraining, with exploration clipped to the search space's bounds.

Only the explore step is ours (`pbt.search.space.explore`); truncation selection, exploit through
checkpoints and the policy log (`pbt_global.txt`, copied to `exploits.jsonl`) are Ray's. `_get_new_config` is the hook Ray's
own PB2 scheduler overrides for the same purpose. Two decisions of Ray's asynchronous mode are
changed: a member never copies a checkpoint older than its own epoch (see `_checkpoint_or_exploit`),
and on clusters a member that has a slot goes on (see `keep_running`). The default is Ray's
synchronous mode (`population.synch`), which ranks every member at the same epoch.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import ray
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from pbt.config import PopulationConfig
from pbt.engines.common import EXPLOIT_LOGGER
from pbt.search.space import SearchSpace, explore
from pbt.storage.layout import POLICY_LOG

log = logging.getLogger(EXPLOIT_LOGGER)  # a fixed name: `pbt` prints what it logs
debug = logging.getLogger(__name__)


class ClippedPBT(PopulationBasedTraining):
    """PBT whose explore step never leaves the bounds of the search space, and says what it did.

    `exploit_log`, when set, receives a copy of each line Ray writes to its policy log (with the
    epochs corrected, see `_log_config_on_step`). Ray's own
    file starts over when the experiment is restored (`pbt resume`: the restored scheduler knows
    nothing of the exploits before), so only the copy holds every exploit of an interrupted run.
    """

    def __init__(
        self, space: SearchSpace, population: PopulationConfig, metric: str, seed: int = 0,
        exploit_log: Path | None = None, synch: bool = True,
    ) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.last_exploit_epoch = population.last_exploit_epoch
        self.perturbation_epochs = population.perturbation_epochs()
        self.exploit_log = exploit_log
        super().__init__(
            time_attr="training_iteration",
            metric=metric,
            mode="max",
            perturbation_interval=population.perturbation_interval,
            hyperparam_mutations={name: bound.domain() for name, bound in space.searched.items()},
            quantile_fraction=population.quantile_fraction,
            resample_probability=population.resample_probability,
            perturbation_factors=tuple(population.perturbation_factors),
            synch=synch,  # `population.synch` resolved (see `synchronous`)
        )

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict, dict]:
        new_config, changes = explore(
            trial_to_clone.config,
            self.space,
            self.rng,
            self._resample_probability,
            self._perturbation_factors,
        )
        # The member keeps its own identity (and seed); only weights and hyperparameters move.
        new_config["member"] = trial.config["member"]
        # The epoch of the donor's checkpoint (its last perturbation), not of its latest result.
        state = self._trial_state.get(trial_to_clone) if isinstance(trial_to_clone, Trial) else None
        epoch = state.last_train_time if state else trial_to_clone.last_result.get("training_iteration", "?")
        log.info("member %s copies member %s (epoch %s): %s", trial.config["member"], trial_to_clone.config["member"],
                 epoch, "; ".join(changes.values()))
        operations = {name: text[text.rindex("(") + 1 : -1] for name, text in changes.items()}
        return new_config, operations

    def _checkpoint_or_exploit(self, trial: Trial, tune_controller, upper_quantile: list, lower_quantile: list) -> None:
        """Ray's step, with donors limited to those whose checkpoint is at least as far as `trial`.

        Asynchronous PBT ranks a member by its score at its last perturbation, and restores a donor's
        checkpoint of the donor's last perturbation. With more members than slots those are of
        different epochs: a member at epoch 6 could copy a donor's epoch-4 state and train epochs
        5-6 again (time travel, repeated epochs, the same exploit logged over and over). A bottom
        member with no donor far enough skips this exploit and trains on. In synchronous mode every
        member is at the same epoch, and the filter keeps every donor.
        """
        if trial in lower_quantile:
            reached = self._trial_state[trial].last_train_time
            donors = [t for t in upper_quantile if self._trial_state[t].last_train_time >= reached]
            if not donors:
                debug.debug("no donor has reached epoch %s: %s is not exploited", reached, trial)
                lower_quantile = [t for t in lower_quantile if t is not trial]
            upper_quantile = donors or upper_quantile  # `trial` is not among them: nothing of its own changes
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def _log_config_on_step(self, trial_state, new_state, trial: Trial, trial_to_clone: Trial, new_config: dict) -> None:
        super()._log_config_on_step(trial_state, new_state, trial, trial_to_clone, new_config)
        if self.exploit_log is not None:  # the line Ray has just appended, with the epochs it meant
            policy = json.loads(Path(trial.local_experiment_path, POLICY_LOG).read_text().splitlines()[-1])
            # Ray writes each trial's last result, which for the trial reporting now is the epoch
            # before; the scheduler's states hold the epoch each was ranked at (the donor's: that of
            # its checkpoint).
            policy[2], policy[3] = trial_state.last_train_time, new_state.last_train_time
            self.exploit_log.parent.mkdir(parents=True, exist_ok=True)
            with self.exploit_log.open("a") as stream:
                stream.write(json.dumps(policy) + "\n")

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        # Ray perturbs every `perturbation_interval` epochs (the first interval: the shortest); members
        # are ranked only at the population's perturbation epochs, which may grow apart, and not after
        # `population.exploit_until`. A scheduler pickled before these settings existed has neither.
        epoch = result.get("training_iteration", 0)
        epochs = getattr(self, "perturbation_epochs", None)
        if epoch > getattr(self, "last_exploit_epoch", math.inf) or (epochs is not None and epoch not in epochs):
            return TrialScheduler.CONTINUE
        synced = self._next_perturbation_sync
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch and epochs is not None and self._next_perturbation_sync != synced:
            # Ray has just ranked everyone and set the next barrier a fixed interval on: move it to
            # the next perturbation epoch (past the end when there is none).
            self._next_perturbation_sync = next((e for e in epochs if e > epoch), math.inf)
        if decision == TrialScheduler.PAUSE and not self._synch:
            trials = tune_controller.get_trials()
            if keep_running(trials, trial.placement_group_factory.required_resources, ray.cluster_resources()):
                return TrialScheduler.CONTINUE
        return decision


def keep_running(trials: Iterable[Trial], per_trial: Mapping[str, float], cluster: Mapping[str, float]) -> bool:
    """Whether a member Ray would pause at a perturbation should go on: every unfinished member fits
    in the cluster at once, so nobody is waiting for a turn.

    Asynchronous PBT pauses a member at each perturbation while any other is pending or paused,
    so that more members than slots take turns and stay at similar epochs. But a member is also
    pending while its actor starts on another node; the paused member's warm actor is then reused
    for it, that node's actor is never used, and the population stays on the nodes that started
    first (seen on a 3-host cluster: all 6 members on the head). With more members than slots,
    Ray's turns are kept as they are.
    """
    unfinished = sum(t.status not in (Trial.TERMINATED, Trial.ERROR) for t in trials)
    return unfinished <= member_slots(per_trial, cluster)


def member_slots(per_trial: Mapping[str, float], cluster: Mapping[str, float]) -> int:
    """How many members the cluster runs at once."""
    return min(int(cluster.get(name, 0.0) // amount) for name, amount in per_trial.items() if amount > 0)


def synchronous(population: PopulationConfig, per_trial: Mapping[str, float], cluster: Mapping[str, float]) -> bool:
    """`population.synch` resolved: `auto` is synchronous only when members must take turns.

    With more members than slots, asynchronous PBT ranks members of different epochs against each
    other; synchronous PBT ranks them at one epoch. When every member has a slot, members advance
    together anyway, and the barrier's pauses would only cost actor restarts and, on a cluster,
    pull the population onto the nodes that started first (see `keep_running`).
    """
    if population.synch != "auto":
        return bool(population.synch)
    return population.size > member_slots(per_trial, cluster)
