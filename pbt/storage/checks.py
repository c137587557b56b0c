"""Checks that an experiment's storage can be used, before anything runs: writable, seen by every
node of a cluster, not holding an earlier run's results or another kind of experiment; and opening
an existing experiment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pbt.errors import PbtError
from pbt.storage.layout import CONFIG_FILE, JOB_FILE, RANGE_FILE, SWEEP_PREFIX, TENSORBOARD
from pbt.storage.store import Storage, split_experiment


def check_storage(storage: Storage) -> None:
    """The experiment folder can be created and written: checked on its nearest existing ancestor
    (for a URI: by writing a file there)."""
    if storage.remote:
        storage.check_writable()
        return
    existing = _nearest_existing(storage.local)
    if not existing.is_dir():
        raise PbtError(f"storage_path: {str(existing)!r} is a file, not a folder, but got storage_path={storage.storage_path!r}")
    try:  # a real write: permission bits say nothing for root or on read-only mounts
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".pbt-write-check-"))
    except OSError as err:
        raise PbtError(
            f"storage_path: cannot write to {str(existing)!r} ({err.strerror or err}), but got "
            f"storage_path={storage.storage_path!r}; give a folder you can write to"
        ) from None


# File systems that live on one machine: on a cluster of several, other nodes cannot see them.
NODE_LOCAL_FILE_SYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "ramfs", "overlay", "vfat"}


def check_cluster_storage(storage: Storage, hosts: int, mounts: str | None = None) -> None:
    """On a cluster spanning several machines, refuse a storage path on a node-local file system.

    Every member writes its checkpoints under `storage_path` from whichever node it runs on, and
    clones read their donors' checkpoints from there: a folder only one machine sees would lose
    them. `mounts` is the text of /proc/mounts (read when not given).
    """
    if hosts <= 1 or storage.remote:
        return
    existing = _nearest_existing(storage.local)
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


# The kinds of experiment a folder holds, each told by what it leaves at the top of the folder:
# `pbt lr-find` a range test (lr_range.json); `pbt run`, `pbt pbt` and `pbt grid` one training job
# (job.json, written before its first arm starts; the arms may be run one at a time into one folder);
# `pbt sweep` a sweep (sweep/, sweep_w<width>/, sweep.json ...).
RANGE_TEST, JOB, SWEEP = "range test", "job", "sweep"
HELD = {RANGE_TEST: "an LR range test (pbt lr-find)", JOB: "a training job (pbt run, pbt pbt or pbt grid)",
        SWEEP: "a sweep (pbt sweep)"}
NOUNS = {RANGE_TEST: "range test", JOB: "run", SWEEP: "sweep"}
# What each writes over another's file of the same name.
WRITES = {RANGE_TEST: (RANGE_FILE,), JOB: (CONFIG_FILE, RANGE_FILE), SWEEP: (CONFIG_FILE,)}


def held_experiments(storage: Storage) -> list[str]:
    """The kinds of experiment the folder holds: none, one, or (mixed with --overwrite) several."""
    return _held(storage.names())


def _held(names: list[str]) -> list[str]:
    held = []
    if JOB_FILE in names:
        held.append(JOB)
    elif RANGE_FILE in names:  # a job's range test is part of the job
        held.append(RANGE_TEST)
    if any(name.startswith(SWEEP_PREFIX) for name in names):
        held.append(SWEEP)
    return held


def check_unmixed(storage: Storage, kind: str, overwrite: bool) -> None:
    """Refuse to write an experiment of `kind` into a folder holding another kind's results, unless
    `overwrite`. A job may take over a lone range test: it is the job's first stage, run again."""
    names = storage.names()
    others = [held for held in _held(names) if held != kind and not (kind == JOB and held == RANGE_TEST)]
    if not others or overwrite:
        return
    noun = NOUNS[kind]
    replaced = [name for name in WRITES[kind] if name in names]
    replacing = f", replacing its {' and '.join(replaced)}" if replaced else ""
    raise PbtError(
        f"{storage.shown()} already holds {' and '.join(HELD[other] for other in others)}, and this {noun} would mix "
        f"into it{replacing}; give the {noun} another name (name=...), or pass --overwrite to write there anyway"
    )


def check_fresh(storage: Storage, arms: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to mix a new run into another kind of experiment (`check_unmixed`: the arms name their
    kind) or into an arm's old results; with `overwrite`, clear the arms' old results first."""
    check_unmixed(storage, SWEEP if arms[0].startswith(SWEEP_PREFIX) else JOB, overwrite)
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


def open_experiment(location: str) -> Storage:
    """An existing experiment: a folder, or a URI whose driver files are fetched to the local copy."""
    storage = Storage(*split_experiment(location))
    if storage.remote:
        storage.sync_down()
        if not (storage.local / CONFIG_FILE).is_file():
            raise PbtError(f"{location!r} holds no pbt experiment (no {CONFIG_FILE}); give storage_path/name of one")
    return storage
