"""One experiment folder, arm by arm: the search space, PBT, the grid and one-cycle baselines, the comparison.

Layout of `<storage_path>/<name>/` (a folder, or a URI with a local staging copy: see `pbt.storage`):

    config.json            the validated config every arm ran with
    lr_range.json/.png     the range test (when it ran)
    pbt/  grid/  one_cycle/   Ray Tune's trial folders and our reports.jsonl per arm
    lineage.json           PBT: who copied whom, the best member's schedule
    summary.json, compare_accuracy.png, compare_schedule.png   the comparison
    tensorboard/           everything above as TensorBoard runs
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import ray
from ray import tune

from pbt.compare import ARM_TITLES, compare_arms, load_arms
from pbt.config import ExperimentConfig, load_saved_config, read_json
from pbt.errors import PbtError
from pbt.grid import AXES_FILE, grid_axes, grid_points, point_label
from pbt.launch import ensure_ray, exploit_log, run_grid, run_one_cycle, run_population
from pbt.lineage import build_lineage
from pbt.pack_trial import is_pack_checkpoint, load_pack_state
from pbt.packing import PACKING_FILE, Packing, plan_packing, require_packs_together
from pbt.ray_adapter import load_member_state
from pbt.records import ReportRecorder, member_label
from pbt.report import accuracy_figure, schedule_figure, write_comparison_runs, write_hparams
from pbt.scheduler import POLICY_LOG
from pbt.space import SearchSpace, space_from_dict
from pbt.storage import TENSORBOARD, PeriodicUpload, Storage, split_experiment

JOB_FILE = "job.json"


def check_storage(config: ExperimentConfig) -> None:
    """The experiment folder can be created and written: checked on its nearest existing ancestor
    (for a URI: by writing a file there)."""
    if config.storage.remote:
        config.storage.check_writable()
        return
    existing = _nearest_existing(config.experiment_dir)
    if not existing.is_dir():
        raise PbtError(f"storage_path: {str(existing)!r} is a file, not a folder, but got storage_path={config.storage_path!r}")
    try:  # a real write: permission bits say nothing for root or on read-only mounts
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".pbt-write-check-"))
    except OSError as err:
        raise PbtError(
            f"storage_path: cannot write to {str(existing)!r} ({err.strerror or err}), but got "
            f"storage_path={config.storage_path!r}; give a folder you can write to"
        ) from None


# File systems that live on one machine: on a cluster of several, other nodes cannot see them.
NODE_LOCAL_FILE_SYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "ramfs", "overlay", "vfat"}


def check_cluster_storage(config: ExperimentConfig, hosts: int, mounts: str | None = None) -> None:
    """On a cluster spanning several machines, refuse a storage path on a node-local file system.

    Every member writes its checkpoints under `storage_path` from whichever node it runs on, and
    clones read their donors' checkpoints from there: a folder only one machine sees would lose
    them. `mounts` is the text of /proc/mounts (read when not given).
    """
    if hosts <= 1 or config.storage.remote:
        return
    existing = _nearest_existing(config.experiment_dir)
    fs_type = file_system_type(existing, mounts if mounts is not None else _read_mounts())
    if fs_type in NODE_LOCAL_FILE_SYSTEMS:
        raise PbtError(
            f"storage_path: {str(existing)!r} is on a node-local file system ({fs_type}), but the cluster spans "
            f"{hosts} machines and every node writes checkpoints there; mount a shared file system (e.g. NFS) "
            f"at the same path on every node and point storage_path at it"
        )


def file_system_type(path: Path, mounts: str) -> str | None:
    """The type of the file system `path` is on, from /proc/mounts text (the longest matching mount point)."""
    best, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        if (str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def _nearest_existing(folder: Path) -> Path:
    """The folder, or its closest ancestor that exists (what a new experiment folder would be made in)."""
    return next(p for p in (folder, *folder.parents) if p.exists())


def _read_mounts() -> str:
    try:
        return Path("/proc/mounts").read_text()
    except OSError:  # not Linux: nothing to go by
        return ""


def check_fresh(storage: Storage, arms: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to mix a new run into an arm's old results; with `overwrite`, clear them first."""
    taken = [arm for arm in arms if storage.exists(arm)]
    if taken and not overwrite:
        raise PbtError(
            f"{storage.shown()} already holds results of {', '.join(taken)}; pass --overwrite to replace them, "
            f"give the experiment another name (name=...), or finish a cut-off run with `pbt resume {storage.shown()}`"
        )
    for arm in taken:
        storage.delete(arm)
        storage.delete(f"{TENSORBOARD}/{arm}")
    if taken:
        storage.delete(f"{TENSORBOARD}/compare")


def save_config(config: ExperimentConfig) -> Path:
    folder = config.experiment_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.model_dump_json(indent=1))
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


def open_experiment(location: str) -> Storage:
    """An existing experiment: a folder, or a URI whose driver files are fetched to the local copy."""
    storage = Storage(*split_experiment(location))
    if storage.remote:
        storage.sync_down()
        if not (storage.local / "config.json").is_file():
            raise PbtError(f"{location!r} holds no pbt experiment (no config.json); give storage_path/name of one")
    return storage


def verify_checkpoints(storage: Storage, arms: tuple[str, ...]) -> None:
    """Read the latest checkpoint of every run (weights only: no pickled code runs) before resuming from it."""
    for arm in arms:
        for checkpoint in storage.latest_checkpoints(arm):
            with storage.local_copy(checkpoint) as folder:
                load_pack_state(folder) if is_pack_checkpoint(folder) else load_member_state(folder)


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
    grid = run_population(config, space, callbacks=[*arm_callbacks(config, "pbt"), *callbacks], packing=packing)
    lineage = build_lineage(list(grid), read_policy_log(config))
    lineage["space"] = space.to_dict()
    (folder / "lineage.json").write_text(json.dumps(lineage, indent=1))
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
        "lr": settings.max_lr or space.lr.high,
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
    if target is None and (folder / "config.json").is_file():
        target = load_saved_config(folder).compare.target_val_acc
    summary = compare_arms(arms, target)
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    summary["files"] = {"summary": str(out / "summary.json"), "accuracy_plot": str(out / "compare_accuracy.png"),
                        "schedule_plot": str(out / "compare_schedule.png"), "tensorboard": str(out / TENSORBOARD)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    names = " vs ".join(ARM_TITLES.get(name, name) for name in arms)
    for figure, path in (
        (accuracy_figure(arms, summary["target_val_acc"], f"{folder.name}: {names}, accuracy against compute"),
         summary["files"]["accuracy_plot"]),
        (schedule_figure(arms, f"{folder.name}: the hyperparameters of each arm's chosen run"),
         summary["files"]["schedule_plot"]),
    ):
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
    # Rewritten, not appended to: a second `pbt compare` must not draw every curve twice.
    shutil.rmtree(out / TENSORBOARD / "compare", ignore_errors=True)
    write_comparison_runs(arms, out / TENSORBOARD)
    return summary
