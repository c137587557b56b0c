"""`pbt sweep`: each optimizer trained at many fixed learning rates until a target accuracy.

The seed experiment as a command: log-spaced learning rates (48 from 1e-6 to 100 by default) for
each optimizer, each run trained until it reaches `sweep.target` accuracy, diverges, or runs out of
epochs or seconds. Per optimizer it reports the band of rates that reach the target and the fastest
one, beside the LR range test's range for the same optimizer; over `--widths` it reports whether
the fastest rate moves with the model's width and fits time to target against the number of weights.

The runs are the grid arm's machinery (`pbt.engines.tuner.run_grid`: Ray Tune trials, packed where the
trainer packs, the same reports and compute accounting) with a stopper that ends each run at its
target. A run's time to target is the compute seconds it spent up to the epoch that reached it
(in a pack: its share of the pack's time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import tune

from pbt.cluster.session import ensure_ray
from pbt.config import SWEEP_OPTIMIZERS, ExperimentConfig, SweepConfig
from pbt.engines.common import member_results_of
from pbt.engines.packed.model import OPTIMIZER_NAMES
from pbt.engines.packed.plan import Packing
from pbt.engines.tuner import run_grid
from pbt.errors import PbtError
from pbt.range_test.finder import find_lr_range
from pbt.registry import build_trainer
from pbt.reporting.records import read_failures, read_reports
from pbt.schedule import ScheduleConfig
from pbt.stages.arms import arm_callbacks

REACHED, NOT_REACHED, DIVERGED, FAILED = "reached", "not reached", "diverged", "failed"
SPLIT_METRICS = {"train": "train_acc", "val": "val_acc"}


def sweep_points(settings: SweepConfig, names: list[str]) -> list[dict[str, Any]]:
    """Every (optimizer, learning rate) run, numbered like grid points."""
    rates = np.geomspace(settings.lr_min, settings.lr_max, settings.rates).tolist()
    points = []
    for name in names:
        optimizer, momentum = SWEEP_OPTIMIZERS[name]
        chosen = {} if optimizer is None else {"optimizer": optimizer}  # `own`: the trainer's
        for lr in rates:
            points.append({"member": len(points), **chosen, "lr": lr,
                           "momentum": settings.momentum if momentum is None else momentum,
                           "weight_decay": settings.weight_decay})
    return points


def sweep_name(config: dict[str, Any]) -> str:
    """The sweep's name of a run's optimizer: SGD with momentum is `sgd+momentum`."""
    if "optimizer" not in config:
        return "own"
    return "sgd+momentum" if config["optimizer"] == "sgd" and config["momentum"] > 0 else config["optimizer"]


def check_optimizers(config: ExperimentConfig, names: list[str]) -> None:
    """Refuse optimizers the trainer does not build when its `optimizer` setting names them (a trainer
    with its own fixed optimizer would train that one under another name)."""
    for name in names:
        wanted = SWEEP_OPTIMIZERS[name][0]
        if wanted is None:
            continue
        built = type(build_trainer(optimizer_config(config, name), device="cpu").optimizer)
        if OPTIMIZER_NAMES.get(built) != wanted:
            raise PbtError(
                f"{config.trainable} builds {built.__name__} whatever trainer.optimizer says, so `pbt sweep` cannot train "
                f"it with {name}; sweep its own optimizer with --optimizers own, or build the optimizer from "
                "config['optimizer'] with pbt.optim.make_optimizer (as trainables/mnist1d.py does)")


def run_label(config: dict[str, Any]) -> str:
    """A run's name in reports and TensorBoard: `017 sgd+momentum lr=0.0013` (numbered: unique)."""
    return f"{config['member']:03d} {sweep_name(config)} lr={config['lr']:.3g}"


def label_member(label: str) -> int:
    return int(label.split(" ", 1)[0])


class TargetStopper(tune.Stopper):
    """Ends a trial when each of its runs (a pack: every member) reached the target accuracy,
    diverged or spent `max_seconds`. Stops everything if the trainer reports no such accuracy."""

    def __init__(self, metric: str, target: float, max_seconds: float) -> None:
        self.metric, self.target, self.max_seconds = metric, target, max_seconds
        self.done: dict[tuple[str, Any], bool] = {}
        self.spent: dict[tuple[str, Any], float] = {}
        self.missing = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        finished = []
        for report in member_results_of(result):
            key = (trial_id, report.get("member", 0))
            self.spent[key] = self.spent.get(key, 0.0) + report.get("compute_seconds", 0.0)
            value = report.get(self.metric)
            if value is None and not report.get("diverged"):
                self.missing = True
            reached = value is not None and value >= self.target
            self.done[key] = self.done.get(key, False) or reached or bool(report.get("diverged")) \
                or self.spent[key] >= self.max_seconds
            finished.append(self.done[key])
        return all(finished)

    def stop_all(self) -> bool:
        return self.missing


def run_outcome(records: list[dict[str, Any]], metric: str, target: float) -> dict[str, Any]:
    """One run from its reports (in epoch order): reached the target (when, after how much compute),
    diverged, or never reached it within its limits; the best accuracy it had."""
    seconds, best = 0.0, None
    for record in sorted(records, key=lambda r: r["epoch"]):
        seconds += record["compute_seconds"]
        if record["diverged"]:
            return {"status": DIVERGED, "epochs": record["epoch"], "seconds": seconds, "best": best}
        value = record.get(metric)
        best = value if best is None or (value is not None and value > best) else best
        if value is not None and value >= target:
            return {"status": REACHED, "epochs": record["epoch"], "seconds": seconds, "best": best,
                    "epochs_to_target": record["epoch"], "seconds_to_target": seconds}
    epochs = max((r["epoch"] for r in records), default=0)
    return {"status": NOT_REACHED, "epochs": epochs, "seconds": seconds, "best": best}


def band(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The band of learning rates that reach the target: the unbroken stretch of rates (in lr
    order) around the fastest run, which takes the fewest epochs to the target (then the fewest
    seconds). Rates that reached it outside that stretch are listed, not hidden."""
    runs = sorted(runs, key=lambda r: r["lr"])
    reached = [index for index, run in enumerate(runs) if run["status"] == REACHED]
    if not reached:
        return {"reached": 0, "runs": len(runs), "low": None, "high": None, "fastest": None, "outside": []}
    fastest = min(reached, key=lambda i: (runs[i]["epochs_to_target"], runs[i]["seconds_to_target"]))
    low = high = fastest
    while low > 0 and runs[low - 1]["status"] == REACHED:
        low -= 1
    while high < len(runs) - 1 and runs[high + 1]["status"] == REACHED:
        high += 1
    best = runs[fastest]
    return {
        "reached": len(reached), "runs": len(runs), "low": runs[low]["lr"], "high": runs[high]["lr"],
        "fastest": {"lr": best["lr"], "epochs_to_target": best["epochs_to_target"],
                    "seconds_to_target": best["seconds_to_target"]},
        "outside": [runs[i]["lr"] for i in reached if not low <= i <= high],
    }


def range_inside(range_test: dict[str, Any], found: dict[str, Any]) -> bool | None:
    """Whether the range test's [lr_low, lr_high] lies inside the band (None if either is missing)."""
    if "lr_low" not in range_test or found["low"] is None:
        return None
    return found["low"] <= range_test["lr_low"] and range_test["lr_high"] <= found["high"]


def optimizer_config(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """The experiment with `name`'s optimizer, and a range test holding its momentum and the sweep's weight decay."""
    optimizer, momentum = SWEEP_OPTIMIZERS[name]
    momentum = config.sweep.momentum if momentum is None else momentum
    return config.model_copy(update={
        "trainer": config.trainer if optimizer is None else {**config.trainer, "optimizer": optimizer},
        "lr_range": config.lr_range.model_copy(update={"momentum": momentum, "weight_decays": [config.sweep.weight_decay]}),
    })


def optimizer_range(config: ExperimentConfig, name: str) -> dict[str, Any]:
    """The LR range test for one optimizer: its range, or why it found none (one line)."""
    try:
        chosen = find_lr_range(optimizer_config(config, name)).chosen
    except PbtError as err:
        return {"error": str(err)}
    # The features and the median curve too: `scripts/calibrate_range.py` reads them again to fit
    # and check the rule that turns a curve into a range.
    return {"lr_low": chosen.lr_low, "lr_high": chosen.lr_high, "suggestion": chosen.suggestion,
            "steepest_lr": chosen.steepest_lr, "min_loss_lr": chosen.min_loss_lr, "divergence_lr": chosen.divergence_lr,
            "stop_reason": chosen.stop_reason, "lrs": chosen.lrs, "losses": chosen.losses}


def summarize(
    points: list[dict[str, Any]], records: list[dict[str, Any]], failed: list[str], settings: SweepConfig,
    range_tests: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per optimizer: every run's outcome (in lr order), the band, the range test and whether it lies inside."""
    metric = SPLIT_METRICS[settings.split]
    by_member: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_member.setdefault(label_member(record["label"]), []).append(record)
    failed_members = {label_member(label) for label in failed}
    optimizers: dict[str, dict[str, Any]] = {}
    for point in points:
        member = point["member"]
        outcome = ({"status": FAILED, "epochs": 0, "seconds": 0.0, "best": None} if member in failed_members
                   else run_outcome(by_member.get(member, []), metric, settings.target))
        entry = optimizers.setdefault(sweep_name(point), {"runs": []})
        entry["runs"].append({"lr": point["lr"], **outcome})
    for name, entry in optimizers.items():
        entry["band"] = band(entry["runs"])
        entry["range_test"] = range_tests.get(name, {"error": "not run"})
        entry["range_inside_band"] = range_inside(entry["range_test"], entry["band"])
    return optimizers


def fit_line(weights: list[float], seconds: list[float]) -> dict[str, float] | None:
    """Least squares `seconds = c + k * weights`, with R^2 (None below 2 distinct points)."""
    if len(set(weights)) < 2:
        return None
    x, y = np.asarray(weights, dtype=float), np.asarray(seconds, dtype=float)
    k, c = np.polyfit(x, y, 1)
    residual = float(((y - (c + k * x)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return {"c": float(c), "k": float(k), "r2": 1.0 - residual / total if total > 0 else 1.0}


def width_transfer(widths: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer over the widths: the fastest rate at each, whether it moved, and the fit of
    the fastest time to target against the number of weights."""
    transfer: dict[str, dict[str, Any]] = {}
    for name in widths[0]["optimizers"]:
        fastest = [(w["width"], w["weights"], w["optimizers"][name]["band"]["fastest"]) for w in widths]
        found = [(width, weights, best) for width, weights, best in fastest if best is not None]
        rates = [best["lr"] for _, _, best in found]
        transfer[name] = {
            "fastest_lr": {str(width): (best["lr"] if best else None) for width, _, best in fastest},
            "fastest_moved": len(set(rates)) > 1 if rates else None,
            "fastest_lr_ratio": max(rates) / min(rates) if rates else None,
            "fit": fit_line([weights for _, weights, _ in found], [best["seconds_to_target"] for _, _, best in found]),
            "points": [{"width": width, "weights": weights, "seconds_to_target": best["seconds_to_target"]}
                       for width, weights, best in found],
        }
    return transfer


def count_weights(config: ExperimentConfig) -> int:
    """Weights of the experiment's model (one trainer built on the CPU)."""
    return sum(p.numel() for p in build_trainer(config, device="cpu").model.parameters())


def run_sweep(
    config: ExperimentConfig, arm: str, points: list[dict[str, Any]], callbacks: list[tune.Callback], packing: Packing,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Train the sweep's `points` (`sweep_points`) in the arm `arm`: their reports and failed labels."""
    settings = config.sweep
    metric = SPLIT_METRICS[settings.split]
    stopper = TargetStopper(metric, settings.target, settings.max_seconds)
    ensure_ray()
    run_grid(config, points, callbacks=[*arm_callbacks(config, arm, run_label), *callbacks], packing=packing,
             arm=arm, stopper=stopper)
    if stopper.missing:
        raise PbtError(f"{config.trainable} reports no {metric} (sweep.split={settings.split}); "
                       f"return {metric} from its {'train_epoch' if metric == 'train_acc' else 'evaluate'}(), "
                       "or set sweep.split=val")
    folder = config.experiment_dir / arm
    return read_reports(folder), read_failures(folder)


def sweep_experiment(config: ExperimentConfig) -> ExperimentConfig:
    """The experiment as the sweep trains it: each run for at most `sweep.max_epochs` epochs, at a
    constant rate (the sweep measures fixed rates; a schedule would fall over a budget it never trains)."""
    return config.model_copy(update={"population": config.population.model_copy(update={"epochs": config.sweep.max_epochs}),
                                     "schedule": ScheduleConfig()})
