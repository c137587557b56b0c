"""The comparison made visible: a printed table, PNG plots, and TensorBoard comparison runs.

TensorBoard layout under `<experiment>/tensorboard` (open it with `tensorboard --logdir`):

- `compare/<arm>`: one run per arm on shared charts. `vs_epochs_trained/*` and
  `vs_seconds_trained/*` plot the best validation accuracy so far (and the test accuracy of that
  report) against the compute the arm has spent; `best_schedule/*` plots the lr, momentum (where
  any) and weight decay of PBT's best member per epoch beside the grid's best fixed point.
- `pbt/member_NN`, `grid/<point>`, `one_cycle/run`: every run's own curves (`member/*`, written
  live by `pbt.reporting.records`) and its hyperparameters and final metrics for the HPARAMS dashboard.
- `lr_range/...`: the range test (`pbt.range_test.report`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: files only, no backend to choose
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from pbt.optim import shown_hyperparams
from pbt.reporting.compare import ARM_TITLES, ArmSummary
from pbt.reporting.records import LR_TRAINED, read_reports

ARM_COLORS = {"pbt": "tab:blue", "grid": "tab:orange", "one_cycle": "tab:green"}


def format_table(summary: dict[str, Any]) -> str:
    """The comparison as a text table, one row per arm."""
    arms = summary["arms"]
    target = summary["target_val_acc"]
    lines = [
        f"{'arm':<12}{'runs':>5}{'epochs':>8}{'seconds':>9}{'best val':>10}{'chosen val':>12}{'test':>8}"
        f"{'to target: epochs':>19}{'seconds':>9}{'of grid':>9}{'diverged':>10}{'failed':>8}"
    ]
    shares = summary.get("share_of_grid_compute_to_target", {})
    for name, arm in arms.items():
        chosen = arm["chosen"] or {}
        reached = arm["to_target"]
        share = shares.get(name, {}).get("epochs")
        to_epochs = f"{reached['epochs']:g}" if reached else "never"
        to_seconds = f"{reached['seconds']:.1f}" if reached else "-"
        of_grid = f"{share:.0%}" if share is not None else "-"
        lines.append(
            f"{ARM_TITLES.get(name, name):<12}{arm['runs']:>5}{arm['epochs']:>8g}{arm['seconds']:>9.1f}"
            f"{_num(arm['best_val_acc']):>10}{_num(chosen.get('val_acc')):>12}{_num(chosen.get('test_acc')):>8}"
            f"{to_epochs:>19}{to_seconds:>9}{of_grid:>9}{len(arm['diverged']):>10}{len(arm['failed']):>8}"
        )
    if target is not None:
        lines.append(f"\ntarget validation accuracy {target:.4f} ({summary['target_source']}); "
                     "'chosen' is the run with the best final validation accuracy, its test accuracy only reported")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def accuracy_figure(arms: dict[str, ArmSummary], target: float | None, title: str) -> Figure:
    """Best validation accuracy so far (solid) and its test accuracy (dashed, when there is a test
    split) against epochs and seconds."""
    figure = Figure(figsize=(12, 4.6))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, unit in zip(axes, ("epochs", "seconds")):
        for name, arm in arms.items():
            xs = [getattr(p, unit) for p in arm.curve]
            color = ARM_COLORS.get(name)
            axis.step(xs, [p.best_val_acc for p in arm.curve], where="post", color=color, lw=2,
                      label=f"{ARM_TITLES.get(name, name)}: best validation accuracy so far")
            if any(p.test_acc is not None for p in arm.curve):  # a trainer without a test split has none
                axis.step(xs, [p.test_acc if p.test_acc is not None else math.nan for p in arm.curve], where="post",
                          color=color, lw=1, ls="--", label=f"{ARM_TITLES.get(name, name)}: its test accuracy")
        if target is not None:
            axis.axhline(target, color="0.4", lw=0.8, ls=":", label=f"target {target:.4f}")
        axis.set_xlabel(f"compute: {unit} trained, summed over the arm's runs")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(*_accuracy_limits(arms, target))
    axes[1].legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _accuracy_limits(arms: dict[str, ArmSummary], target: float | None) -> tuple[float, float]:
    # Start where the arms are a third into their compute: the early climb is uninformative and
    # would squeeze the differences that matter into the top of the plot.
    finals = [p.best_val_acc for arm in arms.values() for p in arm.curve[len(arm.curve) // 3:]]
    low = min(finals + ([target] if target else []), default=0.0)
    return max(0.0, low - 0.05), min(1.0, max(finals, default=1.0) + 0.02)


def schedule_figure(arms: dict[str, ArmSummary], title: str) -> Figure:
    """Each arm's chosen run: lr, momentum and weight decay per epoch (PBT's schedule, the grid's fixed
    point); no momentum panel where no arm had any."""
    names = shown_hyperparams(entry for arm in arms.values() for entry in arm.schedule)
    figure = Figure(figsize=(4.35 * len(names), 3.8))
    axes = figure.subplots(1, len(names))
    labels = {"pbt": "PBT's best member (its lineage)", "grid": "grid's best point", "one_cycle": "one-cycle run"}
    scheduled = any(_value(e, LR_TRAINED) != e["lr"] for arm in arms.values() for e in arm.schedule if arm.name != "one_cycle")
    for axis, name in zip(axes, names):
        # The rate each epoch really trained at (its steps' mean: the schedule's shape x the peak).
        shown = LR_TRAINED if name == "lr" else name
        for arm in arms.values():
            if arm.schedule:
                axis.step([e["epoch"] for e in arm.schedule], [_value(e, shown) for e in arm.schedule], where="post",
                          color=ARM_COLORS.get(arm.name), lw=2 if arm.name == "pbt" else 1.3,
                          label=labels.get(arm.name, arm.name))
                if name == "lr" and scheduled and arm.name != "one_cycle":  # the peak PBT set, dashed
                    axis.step([e["epoch"] for e in arm.schedule], [e["lr"] for e in arm.schedule], where="post",
                              color=ARM_COLORS.get(arm.name), lw=0.8, ls="--")
        if name != "momentum":
            axis.set_yscale("log")
        axis.set_title("lr trained (dashed: the schedule's peak)" if name == "lr" and scheduled else name.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _value(entry: dict[str, Any], name: str) -> float:
    """A schedule entry's value; `lr_trained` is the peak `lr` where the entry has none (before schedules)."""
    return entry.get(name, entry["lr"]) if name == LR_TRAINED else entry[name]


def write_comparison_runs(arms: dict[str, ArmSummary], logdir: Path) -> None:
    """One TensorBoard run per arm under `compare/`, so the arms share every chart."""
    for name, arm in arms.items():
        with SummaryWriter(str(logdir / "compare" / name)) as writer:
            for point in arm.curve:
                writer.add_scalar("vs_epochs_trained/best_val_acc", point.best_val_acc, point.epochs)
                writer.add_scalar("vs_seconds_trained/best_val_acc", point.best_val_acc, round(point.seconds))
                if point.test_acc is not None:
                    writer.add_scalar("vs_epochs_trained/test_acc_of_best_val", point.test_acc, point.epochs)
                    writer.add_scalar("vs_seconds_trained/test_acc_of_best_val", point.test_acc, round(point.seconds))
            names = shown_hyperparams(arm.schedule)
            for entry in arm.schedule:
                for hyperparam in (*names, LR_TRAINED):
                    writer.add_scalar(f"best_schedule/{hyperparam}", _value(entry, hyperparam), entry["epoch"])


def write_hparams(folder: Path, arm: str, logdir: Path) -> None:
    """Each run's final hyperparameters and metrics into its own TensorBoard run (HPARAMS dashboard)."""
    finals: dict[str, dict[str, Any]] = {}
    best: dict[str, float] = {}
    reports = read_reports(folder / arm)
    # A trainer without a test split reports no test accuracy: leave the column out, not zeros.
    # With one, a diverged run (which skips evaluation) counts as 0, like its validation accuracy.
    has_test = any(report["test_acc"] is not None for report in reports)
    for report in reports:
        finals[report["label"]] = report
        if report["val_acc"] is not None:
            best[report["label"]] = max(best.get(report["label"], 0.0), report["val_acc"])
    names = shown_hyperparams(finals.values())
    for label, final in finals.items():
        values = {"arm": arm, **{name: final[name] for name in names if final[name] is not None}}
        metrics = {"final/val_acc": final["val_acc"] or 0.0}
        if has_test:
            metrics["final/test_acc"] = final["test_acc"] or 0.0
        metrics["final/best_val_acc"] = best.get(label, 0.0)
        experiment, start, end = hparams(values, metrics)
        with SummaryWriter(str(logdir / arm / label)) as writer:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, final["epoch"])
