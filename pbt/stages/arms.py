"""The arms of one experiment, each run into its folder: PBT, the grid and one-cycle baselines,
their packing and callbacks, what `pbt resume` needs, and the comparison (files as in
`pbt.storage.layout`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import ray
from ray import tune

from pbt.cluster.session import ensure_ray
from pbt.config import ExperimentConfig, load_saved_config, read_json
from pbt.engines.common import load_checkpoint_state
from pbt.engines.packed.plan import Packing, plan_packing, require_packs_together
from pbt.engines.tuner import exploit_log, run_grid, run_one_cycle, run_population
from pbt.errors import PbtError
from pbt.reporting.compare import ARM_TITLES, compare_arms, load_arms
from pbt.reporting.figures import accuracy_figure, schedule_figure, write_comparison_runs, write_hparams
from pbt.reporting.records import ReportRecorder, member_label
from pbt.search.grid import grid_axes, grid_points, point_label
from pbt.search.space import SearchSpace, space_from_dict
from pbt.stages.lineage import build_lineage
from pbt.storage.checks import open_experiment
from pbt.storage.layout import (
    ACCURACY_PLOT,
    AXES_FILE,
    CONFIG_FILE,
    JOB_FILE,
    LINEAGE_FILE,
    PACKING_FILE,
    POLICY_LOG,
    SCHEDULE_PLOT,
    SUMMARY_FILE,
    TENSORBOARD,
)
from pbt.storage.store import PeriodicUpload, Storage


def save_config(config: ExperimentConfig) -> Path:
    folder = config.experiment_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(config.model_dump_json(indent=1))
    return folder


def save_job(config: ExperimentConfig, arms: tuple[str, ...], space: SearchSpace) -> None:
    """What `pbt resume` needs to finish the job: which arms, over which space."""
    job = {"arms": list(arms), "space": space.to_dict()}
    (config.experiment_dir / JOB_FILE).write_text(json.dumps(job, indent=1))


def load_job(location: str) -> tuple[ExperimentConfig, tuple[str, ...], SearchSpace]:
    """The config, arms and space of an experiment (a folder or a URI), pinned to where it is now."""
    storage = open_experiment(location)
    folder = storage.local
    config = load_saved_config(folder)
    config = config.model_copy(update={"storage_path": storage.storage_path, "name": storage.name})
    job = read_json(folder / JOB_FILE)
    try:
        arms, space = tuple(job["arms"]), space_from_dict(job["space"])
    except (KeyError, TypeError, ValueError) as err:
        raise PbtError(f"{str(folder / JOB_FILE)!r} is damaged ({err!r}); run the experiment again") from None
    verify_checkpoints(storage, arms)
    return config, arms, space


def verify_checkpoints(storage: Storage, arms: tuple[str, ...]) -> None:
    """Read the latest checkpoint of every run (weights only: no pickled code runs) before resuming from it."""
    for arm in arms:
        for checkpoint in storage.latest_checkpoints(arm):
            with storage.local_copy(checkpoint) as folder:
                load_checkpoint_state(folder)


def arm_callbacks(config: ExperimentConfig, arm: str, label=member_label) -> list[tune.Callback]:
    """Every arm's own callbacks: its reports, and for a URI storage their upload as they grow."""
    folder = config.experiment_dir
    reports = ReportRecorder(arm, folder / arm, label=label, tensorboard=folder / TENSORBOARD)
    return [reports, *([PeriodicUpload(config.storage)] if config.storage.remote else [])]


def arm_packing(config: ExperimentConfig, arm: str, runs: list[dict[str, Any]], largest: int | None = None) -> Packing:
    """How an arm's runs are packed: as decided when the arm first started (`packing.json`: a
    resumed arm keeps its trials), else planned now for the cluster this process is connected to."""
    path = config.experiment_dir / arm / PACKING_FILE
    ensure_ray()
    if path.is_file():
        packing = Packing.from_dict(read_json(path))
    else:
        packing = plan_packing(config, runs, ray.cluster_resources(), largest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(packing.to_dict(), indent=1))
    if arm == "pbt" and packing.packed:  # also on resume: the cluster may have shrunk
        note = require_packs_together(len(packing.groups), sum(len(group) for group in packing.groups),
                                      dict(packing.resources))
        if note:
            packing = dataclasses.replace(packing, note=note)
    return packing


def pbt_arm(
    config: ExperimentConfig, space: SearchSpace, callbacks: list[tune.Callback], packing: Packing = Packing(),
) -> tuple[dict, list]:
    """Run the population; write `lineage.json`. Returns the lineage and the failed members' errors."""
    folder = config.experiment_dir
    ensure_ray()
    space = space.population_start(config.search.lr_start_span)
    grid = run_population(config, space, callbacks=[*arm_callbacks(config, "pbt"), *callbacks], packing=packing)
    lineage = build_lineage(list(grid), read_policy_log(config))
    lineage["space"] = space.to_dict()
    (folder / LINEAGE_FILE).write_text(json.dumps(lineage, indent=1))
    write_hparams(folder, "pbt", folder / TENSORBOARD)
    return lineage, list(grid.errors)


def read_policy_log(config: ExperimentConfig) -> str | None:
    """Every exploit of the population: pbt's own log, else (experiments from before it) Ray's."""
    ours = exploit_log(config)
    return ours.read_text() if ours.is_file() else config.storage.read_text(f"pbt/{POLICY_LOG}")


def grid_arm(
    config: ExperimentConfig, space: SearchSpace, callbacks: list[tune.Callback], packing: Packing = Packing(),
) -> tuple[dict, list]:
    """Train every grid point for `population.epochs`; returns the axes and the failed points' errors."""
    folder = config.experiment_dir
    axes = grid_axes(config, space)
    (folder / "grid").mkdir(parents=True, exist_ok=True)
    (folder / "grid" / AXES_FILE).write_text(json.dumps(axes, indent=1))
    ensure_ray()
    results = run_grid(config, grid_points(axes), callbacks=[*arm_callbacks(config, "grid", point_label), *callbacks],
                       packing=packing)
    write_hparams(folder, "grid", folder / TENSORBOARD)
    return axes, list(results.errors)


def one_cycle_start(config: ExperimentConfig, space: SearchSpace) -> dict[str, float]:
    """Peak lr (the range's high end unless configured), the momentum bounds' middle, the weight decays' middle."""
    settings = config.one_cycle
    return {
        "lr": settings.max_lr or space.lr.start_top,  # the range's top, not the ceiling above it
        "momentum": settings.max_momentum,
        "weight_decay": (space.weight_decay.low * space.weight_decay.high) ** 0.5,
    }


def one_cycle_arm(config: ExperimentConfig, space: SearchSpace, callbacks: list[tune.Callback]) -> tuple[dict, list]:
    folder = config.experiment_dir
    start = one_cycle_start(config, space)
    ensure_ray()
    results = run_one_cycle(config, start, callbacks=[*arm_callbacks(config, "one_cycle", lambda _: "run"), *callbacks])
    write_hparams(folder, "one_cycle", folder / TENSORBOARD)
    return start, list(results.errors)


def compare_folder(folder: Path, target: float | None = None, out: Path | None = None) -> dict[str, Any]:
    """Summarize the arms of `folder`: `summary.json`, two PNGs and the `compare/` TensorBoard runs in `out`."""
    arms = load_arms(folder)
    if not arms:
        raise PbtError(f"{folder} holds no results of pbt, grid or one_cycle; give a folder written by `pbt run`")
    if target is None and (folder / CONFIG_FILE).is_file():
        target = load_saved_config(folder).compare.target_val_acc
    summary = compare_arms(arms, target)
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    summary["files"] = {"summary": str(out / SUMMARY_FILE), "accuracy_plot": str(out / ACCURACY_PLOT),
                        "schedule_plot": str(out / SCHEDULE_PLOT), "tensorboard": str(out / TENSORBOARD)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    names = " vs ".join(ARM_TITLES.get(name, name) for name in arms)
    for figure, path in (
        (accuracy_figure(arms, summary["target_val_acc"], f"{folder.name}: {names}, accuracy against compute"),
         summary["files"]["accuracy_plot"]),
        (schedule_figure(arms, f"{folder.name}: the hyperparameters of each arm's chosen run"),
         summary["files"]["schedule_plot"]),
    ):
        figure.savefig(path, dpi=110, bbox_inches="tight")
    # Rewritten, not appended to: a second `pbt compare` must not draw every curve twice.
    shutil.rmtree(out / TENSORBOARD / "compare", ignore_errors=True)
    write_comparison_runs(arms, out / TENSORBOARD)
    return summary
