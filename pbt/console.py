"""What the `pbt` commands print about an experiment beside their results: paths a user can
copy, where a stored experiment lives, the line saying how an arm is packed, an arm's live
progress, and the upload of a URI storage. `pbt.cli` and `pbt.sweep_stage` share them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbt.config import ExperimentConfig

if TYPE_CHECKING:
    from pbt.packing import Packing
    from pbt.progress import PopulationProgress
    from pbt.storage import Storage


def shown(path: Path) -> str:
    """A path relative to the working directory when it is below it; easier to copy."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def where(storage: Storage, *parts: str) -> str:
    """Where a user finds part of an experiment: its URI, or its folder as `shown` gives it."""
    return storage.shown(*parts) if storage.remote else shown(storage.local.joinpath(*parts))


def upload(storage: Storage) -> None:
    """For a URI storage: upload what changed, and say where it went (the paths printed are the local copy)."""
    if storage.remote:
        storage.sync_up()
        print(f"\nUploaded to {storage.uri} (trial folders and checkpoints went there directly; "
              f"the files printed above are its local copy in {storage.local})")


def announce_packing(
    config: ExperimentConfig, arm: str, runs: list[dict[str, Any]], kind: str = "members", largest: int | None = None,
) -> Packing:
    """How the arm's runs are packed, said in a line (and why not, when `auto` could not pack)."""
    from pbt.experiment import arm_packing

    packing = arm_packing(config, arm, runs, largest)
    if packing.note:
        print(f"  note: {packing.note}")
    if packing.packed:
        print(f"  {packing.describe(kind)}")
    return packing


def arm_progress(config: ExperimentConfig, arm: str, title: str, runs: int) -> PopulationProgress:
    """An arm's live progress line; a resumed arm counts on from its reports before the stop."""
    from pbt.progress import PopulationProgress
    from pbt.records import read_reports

    return PopulationProgress(title, runs, config.population.epochs, earlier=read_reports(config.experiment_dir / arm))
