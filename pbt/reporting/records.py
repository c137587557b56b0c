"""Every report of every member, as it happens: `reports.jsonl` per arm and per-member TensorBoard runs.

Ray's own trial folders hold the same numbers, but an exploited trial's `progress.csv` restarts
from its donor's iteration and the order across trials is lost. The comparison needs the order in
which compute was spent, so a Tune callback on the driver appends each report to one file per arm
(`pbt`, `grid`, `one_cycle`) in arrival order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from torch.utils.tensorboard import SummaryWriter

from pbt.engines.common import PROBE_EPOCHS, RANK_SCORE, member_configs, member_reports
from pbt.optim import HYPERPARAMS
from pbt.storage.layout import REPORTS_FILE

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc")
# The mean rate an epoch's steps trained at: `lr` (the schedule's peak) x the schedule's shape.
LR_TRAINED = "lr_trained"
MEMBER_SCALARS = (*METRICS, *HYPERPARAMS, LR_TRAINED)


def member_label(config: dict[str, Any]) -> str:
    """A population member's name in files and TensorBoard: `member_03`."""
    return f"member_{config['member']:02d}"


class ReportRecorder(tune.Callback):
    """Appends each result to `folder/reports.jsonl`; with `tensorboard`, one TensorBoard run per member.

    `label` names a trial from its config (`member_03`, `lr=0.01 momentum=0.9 wd=0.0001`).
    """

    def __init__(
        self,
        arm: str,
        folder: Path,
        label: Callable[[dict[str, Any]], str] = member_label,
        tensorboard: Path | None = None,
    ) -> None:
        self.arm, self.label, self.tensorboard = arm, label, tensorboard
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / REPORTS_FILE
        self.started = time.monotonic()
        self.writers: dict[str, SummaryWriter] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        wall = time.monotonic() - self.started
        records = [to_record(self.arm, self.label(config), report, wall) for config, report in member_reports(trial.config, result)]
        with self.path.open("a") as stream:
            stream.writelines(json.dumps(record) + "\n" for record in records)
        if self.tensorboard is not None:
            for record in records:
                self._write_scalars(record)

    def _write_scalars(self, record: dict[str, Any]) -> None:
        writer = self.writers.get(record["label"])
        if writer is None:
            writer = self.writers[record["label"]] = SummaryWriter(str(self.tensorboard / self.arm / record["label"]))
        for name in MEMBER_SCALARS:
            value = record.get(name)
            if value is not None and math.isfinite(value):
                # Step = the lineage's epoch, so an exploited member's curve continues from its donor's.
                writer.add_scalar(f"member/{name}", value, record["epoch"])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A member that failed for good (Ray's retries used up; a pack: each of its members); the comparison counts these.
        wall = time.monotonic() - self.started
        with self.path.open("a") as stream:
            for config in member_configs(trial.config):
                stream.write(json.dumps({"arm": self.arm, "label": self.label(config), "failed": True, "wall_seconds": wall}) + "\n")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def to_record(arm: str, label: str, result: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The fields of a Tune result the comparison uses; non-finite losses become None (valid JSON)."""
    record = {
        "arm": arm,
        "label": label,
        "epoch": result["training_iteration"],
        "wall_seconds": wall_seconds,
        "epochs_executed": result.get("epochs_executed", 1),
        PROBE_EPOCHS: result.get(PROBE_EPOCHS, 0.0),  # a cooldown probe's share of an epoch (`population.probe`)
        "compute_seconds": result.get("compute_seconds", result.get("time_this_iter_s", 0.0)),
        "diverged": bool(result.get("diverged", False)),
        "node_id": result.get("node_id"),
    }
    for name in (*METRICS, *HYPERPARAMS, LR_TRAINED):
        value = result.get(name)
        record[name] = float(value) if value is not None and math.isfinite(value) else None
    if RANK_SCORE in result:  # what PBT ranked the member by (`pbt.engines.common.RANK_SCORE`)
        record[RANK_SCORE] = float(result[RANK_SCORE]) if math.isfinite(result[RANK_SCORE]) else None
    return record


def read_reports(folder: Path) -> list[dict[str, Any]]:
    """The reports of one arm, in the order they arrived (failure records left out)."""
    return [record for record in _read(folder) if not record.get("failed")]


def read_failures(folder: Path) -> list[str]:
    """Labels of the runs of one arm that failed for good."""
    return [record["label"] for record in _read(folder) if record.get("failed")]


def _read(folder: Path) -> list[dict[str, Any]]:
    path = folder / REPORTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compute_epochs(report: dict[str, Any]) -> float:
    """The epochs of compute a report stands for: the epoch it trained, and a probe's share, if any."""
    return report["epochs_executed"] + report.get(PROBE_EPOCHS, 0.0)
