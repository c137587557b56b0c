"""What the `pbt` commands print about an experiment beside their results: where a stored
experiment lives, the line saying how an arm is packed, an arm's live progress, and the upload
of a URI storage. The stages share them."""

from __future__ import annotations

from pbt.config import ExperimentConfig
from pbt.engines.packed.plan import Packing
from pbt.reporting.progress import PopulationProgress
from pbt.reporting.records import read_reports
from pbt.storage.store import Storage, shown


def where(storage: Storage, *parts: str) -> str:
    """Where a user finds part of an experiment: its URI, or its folder as `shown` gives it."""
    return storage.shown(*parts) if storage.remote else shown(storage.local.joinpath(*parts))


def upload(storage: Storage) -> None:
    """For a URI storage: upload what changed, and say where it went (the paths printed are the local copy)."""
    if storage.remote:
        storage.sync_up()
        print(f"\nUploaded to {storage.uri} (trial folders and checkpoints went there directly; "
              f"the files printed above are its local copy in {storage.local})")


def announce_packing(packing: Packing, kind: str = "members") -> Packing:
    """Say in a line how an arm's runs are packed (and why not, when `auto` could not pack)."""
    if packing.note:
        print(f"  note: {packing.note}")
    if packing.packed:
        print(f"  {packing.describe(kind)}")
    return packing


def arm_progress(config: ExperimentConfig, arm: str, title: str, runs: int) -> PopulationProgress:
    """An arm's live progress line; a resumed arm counts on from its reports before the stop."""
    return PopulationProgress(title, runs, config.population.epochs, earlier=read_reports(config.experiment_dir / arm))
