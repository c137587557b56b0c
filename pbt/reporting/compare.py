"""Was PBT worth it? The numbers of the comparison between arms (PBT, grid, one-cycle).

Compute is what members report: epochs actually executed and seconds actually trained, never
`training_iteration` (a PBT clone inherits its donor's). Within an arm, compute is counted as if
all its runs advanced together, epoch by epoch, as they would on a cluster with a slot per run:
Tune runs grid points a few at a time, and the order it happens to pick would otherwise decide
when the grid first finds its best point.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbt.optim import HYPERPARAMS
from pbt.reporting.records import LR_TRAINED, compute_epochs, read_failures, read_reports

ARMS = ("pbt", "grid", "one_cycle")
ARM_TITLES = {"pbt": "PBT", "grid": "grid search", "one_cycle": "one-cycle"}


@dataclass
class CurvePoint:
    """The arm after some compute: the best validation accuracy so far and that report's test accuracy."""

    epochs: float  # a cooldown probe counts its share of an epoch
    seconds: float
    best_val_acc: float
    test_acc: float | None


@dataclass
class ArmSummary:
    name: str
    runs: int
    epochs: float
    seconds: float
    best_val_acc: float | None
    chosen: dict[str, Any] | None  # the run with the best *final* validation accuracy
    diverged: list[str]
    failed: list[str]
    curve: list[CurvePoint] = field(default_factory=list)
    # The chosen run's lr, momentum and weight decay per epoch (for PBT: its lineage's, from lineage.json).
    schedule: list[dict[str, Any]] = field(default_factory=list)
    to_target: dict[str, float] | None = None  # compute when best_val_acc first reached the target


def summarize_arm(name: str, reports: list[dict[str, Any]], failed: list[str] | None = None) -> ArmSummary:
    """Totals, the validation-chosen run and the best-so-far curve of one arm's reports."""
    finals: dict[str, dict[str, Any]] = {}
    for report in reports:
        finals[report["label"]] = report  # the last report of each run
    # Ties in validation accuracy (800 examples: a tie is common) go to the lower validation loss,
    # then to the label: never to whichever run reported first, so a seeded run chooses the same.
    ranked = sorted((r for r in finals.values() if r["val_acc"] is not None), key=lambda r: r["label"])
    chosen = max(ranked, key=lambda r: (r["val_acc"], -_finite(r.get("val_loss"))), default=None)
    curve = best_so_far(reports)
    return ArmSummary(
        name=name,
        runs=len(finals) + len([label for label in failed or [] if label not in finals]),
        epochs=sum(compute_epochs(r) for r in reports),
        seconds=sum(r["compute_seconds"] for r in reports),
        best_val_acc=curve[-1].best_val_acc if curve else None,
        chosen=None if chosen is None else {
            "label": chosen["label"],
            "val_acc": chosen["val_acc"],
            "test_acc": chosen["test_acc"],
            **{name: chosen[name] for name in HYPERPARAMS},
        },
        diverged=sorted({r["label"] for r in reports if r["diverged"]}),
        failed=sorted(set(failed or [])),
        curve=curve,
        schedule=[] if chosen is None else [schedule_entry(r) for r in reports if r["label"] == chosen["label"]],
    )


def schedule_entry(report: dict[str, Any]) -> dict[str, Any]:
    """An epoch of a run's schedule: its hyperparameters (lr: the schedule's peak) and `lr_trained`,
    the mean rate its steps trained at (the peak where the report predates schedules)."""
    trained = report.get(LR_TRAINED)
    return {"epoch": report["epoch"], **{name: report[name] for name in HYPERPARAMS},
            LR_TRAINED: report["lr"] if trained is None else trained}


def _finite(value: float | None) -> float:
    """A loss to rank by: missing or non-finite counts as worst."""
    return value if value is not None and math.isfinite(value) else math.inf


def best_so_far(reports: list[dict[str, Any]]) -> list[CurvePoint]:
    """Cumulative compute against the best validation accuracy so far, runs advancing together.

    Within an epoch, runs count in the order of their labels, not of their reports' arrival: which
    run reported first is a matter of timing, and the compute to reach a target should not be (a
    seeded packed run repeats its reports exactly, and so repeats its epochs to target)."""
    ordered = sorted(reports, key=lambda report: (report["epoch"], report["label"]))
    epochs, seconds, best = 0, 0.0, None
    curve = []
    for report in ordered:
        epochs += compute_epochs(report)
        seconds += report["compute_seconds"]
        val = report["val_acc"]
        if val is not None and math.isfinite(val) and (best is None or val > best["val_acc"]):
            best = report
        if best is not None:
            curve.append(CurvePoint(epochs, seconds, best["val_acc"], best["test_acc"]))
    return curve


def compute_to_reach(curve: list[CurvePoint], target: float) -> dict[str, float] | None:
    """Epochs and seconds spent when the best validation accuracy first reached `target`."""
    for point in curve:
        if point.best_val_acc >= target:
            return {"epochs": point.epochs, "seconds": point.seconds}
    return None


def compare_arms(arms: dict[str, ArmSummary], target: float | None) -> dict[str, Any]:
    """`summary.json`: every arm's summary, the target and each arm's compute to reach it.

    Without a configured `target`, the target is the grid's final best validation accuracy (that of
    the grid point it would pick): the question becomes "how much of the grid's compute does PBT
    need to match what the grid ends with?".
    """
    source = "configured"
    if target is None and "grid" in arms and arms["grid"].chosen is not None:
        target, source = arms["grid"].chosen["val_acc"], "the grid's final best validation accuracy"
    for arm in arms.values():
        arm.to_target = compute_to_reach(arm.curve, target) if target is not None else None
    summary: dict[str, Any] = {"target_val_acc": target, "target_source": source if target is not None else None,
                               "arms": {name: _without_missing_test(asdict(arm)) for name, arm in arms.items()}}
    grid = arms.get("grid")
    if grid is not None and grid.epochs:
        summary["share_of_grid_compute_to_target"] = {
            name: {"epochs": arm.to_target["epochs"] / grid.epochs, "seconds": arm.to_target["seconds"] / grid.seconds}
            for name, arm in arms.items() if arm.to_target is not None
        }
    return summary


def _without_missing_test(arm: dict[str, Any]) -> dict[str, Any]:
    """An arm for summary.json with `test_acc` left out where there is none (no test split): a
    reader then sees that the trainer has no test split, not a null that looks like a failure."""
    for record in [arm["chosen"] or {}, *arm["curve"]]:
        if record.get("test_acc", 0.0) is None:
            del record["test_acc"]
    return arm


def load_arms(folder: Path) -> dict[str, ArmSummary]:
    """The arms an experiment folder holds, from their `reports.jsonl`."""
    arms = {}
    for name in ARMS:
        reports = read_reports(folder / name)
        if reports:
            arms[name] = summarize_arm(name, reports, read_failures(folder / name))
    lineage = folder / "lineage.json"
    if "pbt" in arms and lineage.is_file():
        # A PBT member's own reports hold only its own hyperparameters; its lineage's epochs
        # before the last exploit were trained by the donors, as recorded in lineage.json.
        schedule = json.loads(lineage.read_text())["best"]["schedule"]
        arms["pbt"].schedule = [schedule_entry(e) for e in schedule]
    return arms
