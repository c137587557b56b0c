"""The one place that chooses an engine: the Tuner of every arm, over actors or packs."""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.stopper import CombinedStopper, MaximumIterationStopper

from pbt.cluster.interrupts import GracefulStop, Interrupted
from pbt.config import ExperimentConfig
from pbt.engines.actor.one_cycle import OneCycleMember
from pbt.engines.actor.scheduler import ClippedPBT, synchronous
from pbt.engines.actor.trainable import PBTMember
from pbt.engines.common import MEMBERS, RANK_SCORE
from pbt.engines.packed.plan import Packing
from pbt.engines.packed.scheduler import PackExploits, start_board
from pbt.engines.packed.trainable import PackTrial
from pbt.optim import HYPERPARAMS
from pbt.search.space import SearchSpace
from pbt.storage.layout import EXPLOIT_LOG

log = logging.getLogger(__name__)


def quiet_tune() -> None:
    """Leave the console to pbt's own progress lines."""
    # Tune's console tables and its hint to open TensorBoard on Ray's session folder would
    # point users away from the experiment folder; the legacy engine at verbose=0 is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short epochs make Tune snapshot its state often (a snapshot follows every `num_to_keep`
    # checkpoints) and warn about it in three lines a user can do nothing about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A resumed trial makes Tune's JSON/CSV loggers look for a remote copy of result.json that a
    # local run never has, and warn each time.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    # A diverged run reports an infinite loss on purpose; Tune's TensorBoard logger warns at each
    # such value (pbt's own TensorBoard runs leave them out).
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


def run_population(
    config: ExperimentConfig,
    space: SearchSpace,
    callbacks: list[tune.Callback] | None = None,
    member_class: type[PBTMember] = PBTMember,
    packing: Packing = Packing(),
) -> tune.ResultGrid:
    """PBT over `space` with Ray Tune; trial folders go to `pbt/` of the experiment's storage.
    Packed (`packing.groups`): the packs are the trials and `PackedPBT` runs PBT across them."""
    population = config.population
    if packing.packed:
        # The board is where packs meet at each perturbation (`pbt.engines.packed.scheduler`). Its name goes
        # to the packs with the trainable, not in their configs, which `pbt resume` restores as they were.
        board = f"pbt-board-{uuid.uuid4().hex[:12]}"
        handle = start_board(board, len(packing.groups), space.to_dict(), population, config.seed)
        param_space = pack_space(initial_members(space, population.size, config.seed), packing)
        callbacks = [*(callbacks or []), PackExploits(exploit_log(config), board)]
        results = run_trials(config, "pbt", PackTrial, param_space, None, callbacks, packing, board=board)
        ray.kill(handle)  # held until here: Ray ends an actor once its last handle is gone
        return results
    param_space = {
        "member": tune.grid_search(list(range(population.size))),  # identity and seed of each member
        **{name: bound.domain() for name, bound in space.bounds.items()},
    }
    per_member = {"CPU": config.resources.cpu, "GPU": config.resources.gpu}
    synch = synchronous(population, per_member, ray.cluster_resources())
    scheduler = ClippedPBT(space, population, metric=RANK_SCORE, seed=config.seed, exploit_log=exploit_log(config),
                           synch=synch)
    return run_trials(config, "pbt", member_class, param_space, scheduler, callbacks, ranked=True)


def initial_members(space: SearchSpace, size: int, seed: int) -> list[dict[str, Any]]:
    """Each member's identity and starting hyperparameters, drawn as Tune draws them for actors:
    uniformly (log-uniformly for lr and weight decay) inside the search space's starting bounds."""
    rng = random.Random(seed)
    return [{"member": member, **{name: bound.sample(rng) for name, bound in space.bounds.items()}}
            for member in range(size)]


def pack_space(runs: list[dict[str, Any]], packing: Packing) -> dict[str, Any]:
    """Tune's param space for packs: a trial per group of `runs`, its members and their hyperparameters."""
    packs = [[runs[index] for index in group] for group in packing.groups]
    space = {
        "pack": tune.grid_search(list(range(len(packs)))),
        "members": tune.sample_from(partial(_pack_field, packs, lambda run: run["member"])),
        "hyperparams": tune.sample_from(partial(_pack_field, packs, lambda run: {k: run[k] for k in HYPERPARAMS})),
    }
    if "optimizer" in runs[0]:
        space["optimizer"] = tune.sample_from(lambda config: packs[config["pack"]][0]["optimizer"])
    return space


def _pack_field(packs: list[list[dict[str, Any]]], field: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> list:
    return [field(run) for run in packs[config["pack"]]]
def exploit_log(config: ExperimentConfig) -> Path:
    """Where the population's exploits are logged for `lineage.json` (see `ClippedPBT.exploit_log`)."""
    return config.experiment_dir / "pbt" / EXPLOIT_LOG


def run_grid(
    config: ExperimentConfig, points: list[dict[str, Any]], callbacks: list[tune.Callback] | None = None,
    packing: Packing = Packing(), arm: str = "grid", stopper: tune.Stopper | None = None,
) -> tune.ResultGrid:
    """Every grid point trained for `population.epochs` epochs (or until `stopper` ends it); trial
    folders go to `<arm>/`."""
    if packing.packed:
        return run_trials(config, arm, PackTrial, pack_space(points, packing), None, callbacks, packing, stopper=stopper)
    param_space = {
        "member": tune.grid_search([point["member"] for point in points]),
        # Each point's values follow from its number; a product of grid_search axes could not be numbered.
        **{name: tune.sample_from(partial(_point_value, points, name)) for name in points[0] if name != "member"},
    }
    return run_trials(config, arm, PBTMember, param_space, None, callbacks, stopper=stopper)


def run_one_cycle(
    config: ExperimentConfig, start: dict[str, float], callbacks: list[tune.Callback] | None = None
) -> tune.ResultGrid:
    """One run with `OneCycleLR`, peak `start["lr"]`; its trial folder goes to `one_cycle/`."""
    return run_trials(config, "one_cycle", OneCycleMember, {"member": 0, **start}, None, callbacks)


def run_trials(
    config: ExperimentConfig,
    arm: str,
    member_class: type[PBTMember],
    param_space: dict[str, Any],
    scheduler: TrialScheduler | None,
    callbacks: list[tune.Callback] | None,
    packing: Packing = Packing(),
    stopper: tune.Stopper | None = None,
    **parameters: Any,
) -> tune.ResultGrid:
    """The Tuner every arm shares: same trainable, resources, budget, checkpoints and failure handling.
    `stopper` may end a trial before `population.epochs`; `parameters` go to the trainable's `setup`
    beside the experiment."""
    quiet_tune()
    resources = dict(packing.resources) if packing.packed else {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(member_class, experiment=config, **parameters), resources)
    storage = config.storage
    restore = partial(_restore, f"{storage.path}/{arm}", trainable, storage.tune_filesystem, callbacks or [],
                      exploit_log(config) if arm == "pbt" else None)
    if tune.Tuner.can_restore(f"{storage.path}/{arm}", storage_filesystem=storage.tune_filesystem):
        # The arm was cut off (`pbt resume`): Tune continues each unfinished trial from its last
        # checkpoint and keeps the finished ones; the scheduler and callbacks come back from Tune's tuner.pkl.
        log.info("resuming %s from %s", arm, storage.shown(arm))
        return _fit_with_retries(restore(resume_unfinished=True, resume_errored=True), arm, config.population.epochs, restore)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=config.seed),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=arm,
            storage_path=storage.path,
            storage_filesystem=storage.tune_filesystem,
            stop=_stop(config.population.epochs, stopper),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=config.population.checkpoints_to_keep, checkpoint_at_end=True,
                # Packs never pause (see pbt.engines.packed.scheduler): they checkpoint at each perturbation instead.
                checkpoint_frequency=config.population.perturbation_interval if packing.packed else 0,
            ),
            failure_config=tune.FailureConfig(max_failures=3),
            callbacks=callbacks or [],
            verbose=0,
        ),
    )
    return _fit_with_retries(tuner, arm, config.population.epochs, restore)


def _stop(epochs: int, stopper: tune.Stopper | None) -> dict[str, int] | tune.Stopper:
    if stopper is None:
        return {"training_iteration": epochs}
    return CombinedStopper(MaximumIterationStopper(epochs), stopper)


def _restore(
    path: str, trainable: Any, filesystem: Any, callbacks: list[tune.Callback], exploits: Path | None, **flags: bool
) -> tune.Tuner:
    """`Tuner.restore` with this run's callbacks and exploit log.

    Tune brings back the callbacks and scheduler pickled with the experiment, and they hold the
    folder they write to: that of the process that was killed, which may be another machine's
    staging copy or a folder that has since moved. Tuner.restore takes neither, hence the private
    attributes (checked by tests/test_object_storage.py and tests/test_interrupt.py against the
    Ray version in constraints.txt).
    """
    tuner = tune.Tuner.restore(path, trainable=trainable, storage_filesystem=filesystem, **flags)
    tuner._local_tuner.get_run_config().callbacks = callbacks
    scheduler = tuner._local_tuner._tune_config.scheduler
    if isinstance(scheduler, ClippedPBT):
        scheduler.exploit_log = exploits
        # Ray's synchronous PBT does not survive a restore: its barrier state comes back from
        # tuner.pkl, no paused trial counts as below the barrier, and nothing is started again
        # (seen: `pbt resume` waited forever). The resumed population goes on asynchronously,
        # where pbt's guard still keeps every copier from a donor behind it.
        scheduler._synch = False
    return tuner


def _fit_with_retries(
    tuner: tune.Tuner, arm: str, epochs: int, restore: Callable[..., tune.Tuner], rounds: int = 1
) -> tune.ResultGrid:
    """`fit()`, then resume errored trials from their checkpoints, `rounds` more times at most.

    Tune's FailureConfig retries a trial whose actor died, but when a node dies while a trial has
    two requests in flight (a step and a checkpoint), the second failure arrives after the retry
    was scheduled and ends the trial for good. Restoring the experiment gives such trials back.
    """
    results = _fit(tuner, arm, epochs)
    for _ in range(rounds):
        if not results.errors:
            break
        log.warning("%d trial(s) of %s failed; resuming them from their last checkpoints", len(results.errors), arm)
        results = _fit(restore(resume_errored=True), arm, epochs)
    return results


def _fit(tuner: tune.Tuner, arm: str, epochs: int) -> tune.ResultGrid:
    """`fit()`; stopped by Ctrl-C or SIGTERM, it saves every run's state and raises `Interrupted`
    saying how far the arm got, rather than returning a partial result as if it were final."""
    with GracefulStop() as stop:
        results = tuner.fit()
    if stop.signum is not None:
        raise Interrupted(stop.signum, where=progress_text(arm, epochs, [r.metrics or {} for r in results]))
    return results


def progress_text(arm: str, epochs: int, metrics: list[dict[str, Any]]) -> str:
    """How far the runs of an arm got: `in pbt: 1 of 4 runs finished, the others at epochs 12-14 of 40`.
    A pack counts as its members."""
    reached = [m.get("training_iteration", 0) for m in metrics for _ in m.get(MEMBERS) or [None]]
    finished = sum(epoch >= epochs for epoch in reached)
    others = [epoch for epoch in reached if epoch < epochs]
    low, high = min(others, default=0), max(others, default=0)
    at = f"at epoch {low}" if low == high else f"at epochs {low}-{high}"
    if not finished:
        return f"in {arm}: its {len(reached)} runs {at} of {epochs}"
    return f"in {arm}: {finished} of {len(reached)} runs finished, the others {at} of {epochs}"


def _point_value(points: list[dict[str, Any]], name: str, config: dict[str, Any]) -> Any:
    return points[config["member"]][name]
