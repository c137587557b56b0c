"""The main job: check the config before anything starts, run the range test and the arms, resume
a stopped job, and compare; each stage prints what it found."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pbt.cluster.interrupts import as_interrupted
from pbt.cluster.resources import require_resources
from pbt.cluster.session import connect
from pbt.config import ExperimentConfig, foreign_trainer_note, load_config
from pbt.contract import check_contract
from pbt.engines.packed.plan import require_population_packs
from pbt.range_test.report import run_range_test
from pbt.registry import resolve_trainer, trainer_settings
from pbt.reporting.compare import load_arms
from pbt.reporting.console import announce_packing, arm_progress, upload, where
from pbt.reporting.figures import format_table
from pbt.search.grid import grid_axes, grid_points
from pbt.search.space import SearchSpace, search_space
from pbt.stages.arms import (
    arm_packing,
    compare_folder,
    grid_arm,
    load_job,
    one_cycle_arm,
    one_cycle_start,
    pbt_arm,
    save_config,
    save_job,
)
from pbt.stages.lineage import format_schedule
from pbt.storage.checks import check_cluster_storage, check_fresh, check_storage, open_experiment
from pbt.storage.layout import LINEAGE_FILE, TENSORBOARD
from pbt.storage.store import shown
from pbt.trainer import TensorClassificationTrainer, Trainer


def checked_config(path: str, overrides: list[str], address: str | None) -> ExperimentConfig:
    """The config, its trainer section, its storage and its cluster checked: fail before anything starts."""
    config = load_config(path, overrides)
    note = foreign_trainer_note(path, overrides, config)
    if note:
        print(f"note: {note}")
    # The settings as the trainer's schema makes them here (defaults filled, paths made absolute)
    # are what every worker gets: a worker runs in another folder.
    cls = resolve_trainer(config.trainable, config.python_path)
    config = config.model_copy(update={"trainer": trainer_settings(cls, config.trainer)})
    check_storage(config.storage)
    hosts = connect(address)  # a cluster that cannot be reached fails here, before anything is written
    check_cluster_storage(config.storage, hosts)
    check_member_resources(config, address)
    # Built, one step, one evaluation, a checkpoint's round trip: a trainer that breaks the contract
    # is one line here, not every member failing inside Ray after the range test.
    check_contract(config)
    config.storage.sync_down()  # a URI's earlier results, e.g. the pbt arm a later `pbt grid` is compared with
    return config


def check_member_resources(config: ExperimentConfig, address: str | None) -> None:
    """Refuse resources no machine has (Tune would wait for them forever); on an autoscaling cluster, say so."""
    note = require_resources(config.resources, on_cluster=bool(address or os.environ.get("RAY_ADDRESS")))
    if note:
        print(note)


def resume_job(location: str, address: str | None) -> int:
    """Finish the job recorded in an experiment folder: finished runs kept, the others continued."""
    config, arms, space = load_job(location)
    check_cluster_storage(config.storage, connect(address))
    check_member_resources(config, address)
    print(f"Resuming {where(config.storage)}: {', '.join(arms)} (finished runs are kept, "
          "unfinished ones continue from their last checkpoint)")
    return run_arms(config, space, arms)


def start_job(config: ExperimentConfig, arms: tuple[str, ...], overwrite: bool) -> int:
    """Check the folder, run the range test, then the arms (and the comparison when there are several)."""
    check_fresh(config.storage, arms, overwrite)
    if "pbt" in arms:  # before the range test: a population whose packs cannot all run would wait
        note = require_population_packs(config)
        if note:
            print(f"note: {note}")
    try:
        space = prepare_space(config)
    except KeyboardInterrupt as err:
        raise as_interrupted(err, where="before training began: nothing to resume, run the command again") from None
    save_job(config, arms, space)
    config.storage.sync_up()
    return run_arms(config, space, arms)


def run_arms(config: ExperimentConfig, space: SearchSpace, arms: tuple[str, ...]) -> int:
    """Each arm in turn, then the comparison when there are several; 1 if any run failed."""
    started = time.perf_counter()
    stages = {"pbt": pbt_stage, "grid": grid_stage, "one_cycle": one_cycle_stage}
    failed = 0
    try:
        for arm in arms:
            failed += stages[arm](config, space)
            config.storage.sync_up()
    except KeyboardInterrupt as err:
        config.storage.sync_up()  # a URI gets the reports so far: `pbt resume` may run on another machine
        raise as_interrupted(err, resume=where(config.storage)) from None
    if len(arms) > 1:
        compare_stage(config.experiment_dir)
        print(f"\nAll done in {(time.perf_counter() - started) / 60:.1f} min. "
              f"View: tensorboard --logdir {shown(config.experiment_dir / TENSORBOARD)}")
    upload(config.storage)
    return 0 if not failed else 1


def compare_experiments(locations: list[str], target: float | None) -> int:
    """`pbt compare`: each experiment (a folder or a URI) compared and, for a URI, uploaded."""
    for location in locations:
        storage = open_experiment(location)
        compare_stage(storage.local, target)
        upload(storage)
    return 0


def prepare_space(config: ExperimentConfig) -> SearchSpace:
    """The range test (unless `search.lr` is given), then the bounds every arm searches."""
    found = run_range_test(config) if config.search.lr is None else None
    space = search_space(config, found)
    save_config(config)
    print("\nSearch space (the population starts inside it and explores within it; the grid covers it):")
    start = space.population_start(config.search.lr_start_span).lr
    for name, bound in space.searched.items():  # no momentum line for an optimizer without momentum
        below = f"anneal it down to {bound.low:.3g}" if bound.start > bound.low else ""
        above = f"raise it up to {bound.high:.3g}" if bound.start_top < bound.high else ""
        walls = f"; exploration may {' and '.join(filter(None, (below, above)))}" if below or above else ""
        print(f"  {name:<13} [{bound.start:.3g}, {bound.start_top:.3g}]{' (log)' if bound.log else ''}{walls}")
        if name == "lr" and start != bound:
            print(f"  {'':<13} PBT's members start over [{start.start:.3g}, {start.start_top:.3g}]: the range widened "
                  f"{config.search.lr_start_span:g}x each way (search.lr_start_span)")
    print_schedule(config)
    return space


def print_schedule(config: ExperimentConfig) -> None:
    """The schedule every member and grid point follows, and a trainer's own epoch loop, if it has one."""
    schedule = config.schedule
    if schedule.constant:
        return
    print(f"Schedule: {schedule.describe()}; every member and grid point follows it over its "
          f"{config.population.epochs} epochs, lr is its peak")
    cls = resolve_trainer(config.trainable)
    if cls.train_epoch not in (Trainer.train_epoch, TensorClassificationTrainer.train_epoch):
        print(f"note: {cls.__name__} has its own train_epoch: the rate is set before each batch it draws from "
              "self.batches(), else once per epoch")


def pbt_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    """Run PBT, print the best member and its schedule; returns the number of failed members."""
    population = config.population
    print(f"\nPBT: {population.size} members x {population.epochs} epochs, exploit/explore "
          f"{population.describe_perturbations()} (the bottom {population.quantile_fraction:.0%} copy the top "
          f"{population.quantile_fraction:.0%}, then perturb x{population.perturbation_factors[0]:g} or "
          f"x{population.perturbation_factors[1]:g} or resample with p={population.resample_probability:g}; "
          f"{population.describe_ranking()})")
    packing = announce_packing(arm_packing(config, "pbt", [{"member": member} for member in range(population.size)]))
    lineage, errors = pbt_arm(config, space, [arm_progress(config, "pbt", "pbt", population.size)], packing)
    best = lineage["best"]
    print(f"\nBest member: {best['member']}   validation accuracy {best['final_val_acc']:.4f}"
          f"{_test_text(best['final_test_acc'], ' (reported only; chosen by validation)')}")
    print(f"{len(lineage['exploits'])} exploits in all; the best member's schedule:\n")
    print(format_schedule(best["schedule"]))
    _print_errors("member", errors)
    print(f"\nWrote {shown(config.experiment_dir / LINEAGE_FILE)}   (replay it: pbt replay {where(config.storage)})")
    print(f"      {where(config.storage, 'pbt')}   (Ray Tune's trial folders and checkpoints)")
    return len(errors)


def grid_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    """Run the grid baseline and print its best point; returns the number of failed points."""
    axes = grid_axes(config, space)
    points = len(grid_points(axes))  # not the axes' product: an optimizer without momentum has no momentum axis
    print(f"\nGrid: {points} points x {config.population.epochs} epochs "
          f"(the population: {config.population.size} members x {config.population.epochs} epochs)")
    for name, values in axes.items():
        if name == "momentum" and values == [0.0]:
            continue  # no optimizer of the grid has momentum: not an axis
        print(f"  {name:<13} {', '.join(v if isinstance(v, str) else f'{v:.3g}' for v in values)}")
    if points != config.population.size:
        print(f"  note: {points} grid points for {config.population.size} population members: "
              f"the grid spends {points / config.population.size:.0%} of the population's epochs")
    packing = announce_packing(arm_packing(config, "grid", grid_points(axes)), "grid points")
    _, errors = grid_arm(config, space, [arm_progress(config, "grid", "grid", points)], packing)
    chosen = load_arms(config.experiment_dir)["grid"].chosen
    if chosen:
        print(f"\nBest grid point: {chosen['label']}   validation accuracy {chosen['val_acc']:.4f}"
              f"{_test_text(chosen.get('test_acc'))}")
    _print_errors("grid point", errors)
    return len(errors)


def one_cycle_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    """Run the one-cycle baseline and print where it ended; returns the number of failed runs."""
    settings = config.one_cycle
    start = one_cycle_start(config, space)
    print(f"\nOne-cycle: one run of {config.population.epochs} epochs, lr up to {start['lr']:.3g} "
          f"and down, momentum {settings.max_momentum:g} -> {settings.base_momentum:g} -> {settings.max_momentum:g}, "
          f"weight decay {start['weight_decay']:.2g} (the middle of the search space's)")
    _, errors = one_cycle_arm(config, space, [arm_progress(config, "one_cycle", "one-cycle", 1)])
    chosen = load_arms(config.experiment_dir)["one_cycle"].chosen
    if chosen:
        print(f"One-cycle run: validation accuracy {chosen['val_acc']:.4f}{_test_text(chosen.get('test_acc'))}")
    _print_errors("run", errors)
    return len(errors)


def compare_stage(folder: Path, target: float | None = None) -> None:
    """Compare the arms of `folder` and print the table, the grid's best point and the files written."""
    summary = compare_folder(folder, target)
    print(f"\nComparison of {shown(folder)} (compute = epochs and seconds actually trained, all runs of an arm):\n")
    print(format_table(summary))
    pbt_arm = summary["arms"].get("pbt")
    grid_arm = summary["arms"].get("grid")
    if pbt_arm and grid_arm and grid_arm["chosen"]:
        chosen = grid_arm["chosen"]
        momentum = f"momentum {chosen['momentum']:.3f}, " if chosen["momentum"] else ""
        print(f"\nThe grid's best fixed point: lr {chosen['lr']:.3g}, {momentum}"
              f"weight decay {chosen['weight_decay']:.2g}")
    files = summary["files"]
    print(f"\nWrote {shown(Path(files['summary']))}\n      {shown(Path(files['accuracy_plot']))}")
    print(f"      {shown(Path(files['schedule_plot']))}\n      {shown(Path(files['tensorboard']))}/compare")


def _test_text(test_acc: float | None, note: str = "") -> str:
    """`   test accuracy 0.8123` after a validation accuracy; nothing when the trainer has no test split."""
    return "" if test_acc is None else f"   test accuracy {test_acc:.4f}{note}"


def _print_errors(what: str, errors: list) -> None:
    if errors:
        print(f"\n{len(errors)} {what}(s) failed; the first: {errors[0]}")
