"""The `pbt sweep` command: range tests, the runs (per width), the table, `sweep.json`, plots, TensorBoard."""

from __future__ import annotations

import json
import time
from typing import Any

from pbt.config import ExperimentConfig
from pbt.errors import PbtError
from pbt.registry import resolve_trainer, trainer_settings
from pbt.reporting.console import announce_packing, arm_progress, upload, where
from pbt.stages.arms import arm_packing, save_config
from pbt.stages.sweep_report import format_sweep_table, sweep_figure, width_figure, write_sweep_tensorboard
from pbt.stages.sweep_runs import (
    SPLIT_METRICS,
    check_optimizers,
    count_weights,
    optimizer_range,
    run_sweep,
    summarize,
    sweep_experiment,
    sweep_points,
    width_transfer,
)
from pbt.storage.checks import check_fresh
from pbt.storage.layout import TENSORBOARD
from pbt.storage.store import shown


def sweep_stage(config: ExperimentConfig, widths: list[float] | None, overwrite: bool) -> int:
    """Run the sweep (at each of `widths`, or as configured) and write what it found."""
    started = time.perf_counter()
    config = sweep_experiment(config)
    settings, names = config.sweep, config.sweep.optimizers
    variants = [(None, "sweep", config)] if widths is None else [
        (width, f"sweep_w{width:g}", width_config(config, width)) for width in widths]
    check_optimizers(config, names)
    check_fresh(config.storage, tuple(arm for _, arm, _ in variants), overwrite)
    save_config(config)
    target_text = f"{settings.target:.0%} {settings.split} accuracy ({SPLIT_METRICS[settings.split]})"
    points = sweep_points(settings, names)  # the same runs at every width
    print(f"Sweep: {', '.join(names)} x {settings.rates} learning rates from {settings.lr_min:g} to {settings.lr_max:g}; "
          f"each run until {target_text}, divergence, {settings.max_epochs} epochs or {settings.max_seconds:g} s of compute")
    results = []
    for width, arm, variant in variants:
        weights = count_weights(variant)
        heading = f"width {width:g}: {weights:,} weights" if width is not None else f"{weights:,} weights"
        print(f"\n{heading}. LR range test per optimizer ({variant.lr_range.seeds} seed(s) each):")
        range_tests = {}
        for name in names:
            range_tests[name] = optimizer_range(variant, name)
            found = range_tests[name]
            print(f"  {name:<13} " + (f"[{found['lr_low']:.3g}, {found['lr_high']:.3g}]" if "lr_low" in found
                                      else f"no range: {found['error']}"))
        print(f"\n{len(points)} runs in {where(config.storage, arm)}:")
        # One optimizer's rates at most per pack: every run's share of its pack's time is then
        # comparable across optimizers and widths (a larger pack costs less per member).
        packing = announce_packing(arm_packing(variant, arm, points, largest=settings.rates), "runs")
        records, failed = run_sweep(variant, arm, points, [arm_progress(variant, arm, arm, len(points))], packing)
        optimizers = summarize(points, records, failed, settings, range_tests)
        print()
        print(format_sweep_table(optimizers))
        results.append({"width": width, "arm": arm, "weights": weights, "optimizers": optimizers})
        config.storage.sync_up()
    stem = "sweep" if widths is None else "sweep_widths"  # the two kinds of sweep keep their own files
    summary = write_sweep(config, results, target_text, stem)
    if "width_transfer" in summary:
        print_transfer(summary["width_transfer"])
    print(f"\nWrote {shown(config.experiment_dir / f'{stem}.json')}")
    for path in summary["files"]["plots"]:
        print(f"      {shown(config.experiment_dir / path)}")
    print(f"      {shown(config.experiment_dir / TENSORBOARD)}   (view: tensorboard --logdir "
          f"{shown(config.experiment_dir / TENSORBOARD)})")
    print(f"\nSweep done in {(time.perf_counter() - started) / 60:.1f} min.")
    upload(config.storage)
    return 0


def width_config(config: ExperimentConfig, width: float) -> ExperimentConfig:
    """The experiment at one width: the trainer's `sweep.width_setting` set and checked by its schema."""
    setting = config.sweep.width_setting
    trainer = {**config.trainer, setting: width}
    try:
        trainer = trainer_settings(resolve_trainer(config.trainable), trainer)
    except PbtError as err:
        raise PbtError(f"--widths sets trainer.{setting}, which {config.trainable} does not take as given: {err}; "
                       "name the trainer's width setting with sweep.width_setting") from None
    return config.model_copy(update={"trainer": trainer})


def write_sweep(config: ExperimentConfig, results: list[dict[str, Any]], target_text: str, stem: str) -> dict[str, Any]:
    """`<stem>.json`, the plots (PNG and TensorBoard) of each width, and the width transfer."""
    folder = config.experiment_dir
    summary: dict[str, Any] = {"settings": config.sweep.model_dump(), "trainable": config.trainable,
                               "widths": results, "files": {"plots": []}}
    figures = {}
    for result in results:
        suffix = "" if result["width"] is None else f"_w{result['width']:g}"
        at_width = "" if result["width"] is None else f" at width {result['width']:g}"
        title = f"{config.name}{at_width} ({result['weights']:,} weights)"
        figures[f"sweep/time_to_target{suffix}"] = figure = sweep_figure(result["optimizers"], target_text, title)
        name = f"sweep{suffix}.png"
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        summary["files"]["plots"].append(name)
    if len(results) > 1:
        summary["width_transfer"] = width_transfer(results)
        figure = width_figure(results, summary["width_transfer"], f"{config.name}: does the best learning rate transfer across widths?")
        figure.savefig(folder / "sweep_widths.png", dpi=110, bbox_inches="tight")
        summary["files"]["plots"].append("sweep_widths.png")
        figures["sweep/widths"] = figure
    (folder / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    table = "\n\n".join(format_sweep_table(result["optimizers"]) for result in results)
    write_sweep_tensorboard(folder / TENSORBOARD / f"{stem}_summary", figures, table)
    return summary


def print_transfer(transfer: dict[str, dict[str, Any]]) -> None:
    print("\nAcross widths (the fastest rate at each, and compute seconds to target against weights n):")
    for name, found in transfer.items():
        rates = ", ".join(f"{width}: {lr:.3g}" if lr is not None else f"{width}: -" for width, lr in found["fastest_lr"].items())
        if found["fastest_moved"] is None:
            moved = "reached the target at no width"
        elif found["fastest_moved"]:
            moved = f"moved (x{found['fastest_lr_ratio']:.3g} from lowest to highest)"
        else:
            moved = "did not move"
        fit = found["fit"]
        line = (f"seconds = {fit['c']:.3g} + {fit['k']:.3g} x n, R^2 {fit['r2']:.3f}" if fit
                else "too few widths reached the target to fit")
        print(f"  {name:<13} fastest lr by width {rates}; it {moved}\n  {'':<13} {line}")
