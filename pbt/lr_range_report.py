"""Writing an LR range test to an experiment folder: JSON, a PNG plot and TensorBoard runs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from pbt.config import ExperimentConfig  # noqa: E402
from pbt.lr_range import RangeSweep  # noqa: E402


def save_range_sweep(sweep: RangeSweep, config: ExperimentConfig, folder: Path) -> dict[str, Path]:
    """Write `lr_range.json`, `lr_range.png` and `tensorboard/lr_range/...`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "lr_range.json",
        "plot": folder / "lr_range.png",
        "tensorboard": folder / "tensorboard",
    }
    record = {"config": config.model_dump(mode="json"), **sweep.to_dict()}
    paths["json"].write_text(json.dumps(record, indent=1))
    optimizer = config.trainer.get("optimizer")
    what = config.trainable + (f", {optimizer}" if optimizer else "")
    figure = range_figure(sweep, title=f"LR range test: {config.name} ({what})")
    figure.savefig(paths["plot"], dpi=120, bbox_inches="tight")
    write_tensorboard(sweep, paths["tensorboard"], figure)
    plt.close(figure)
    return paths


def range_figure(sweep: RangeSweep, title: str) -> Figure:
    """Loss against learning rate (log axis) per weight decay, the features marked, the range shaded."""
    figure, axes = plt.subplots(figsize=(9, 4.8))
    chosen = sweep.chosen
    for result in sweep.results:
        is_chosen = result is chosen
        label = f"weight decay {result.weight_decay:g}" + (" (chosen)" if is_chosen and len(sweep.results) > 1 else "")
        (line,) = axes.plot(result.lrs, result.smoothed, lw=2 if is_chosen else 1.2, label=f"{label}: smoothed loss")
        axes.plot(result.lrs, result.losses, color=line.get_color(), lw=0.6, alpha=0.35)
    axes.axvspan(chosen.lr_low, chosen.lr_high, color="gold", alpha=0.35,
                 label=f"range for training [{chosen.lr_low:.3g}, {chosen.lr_high:.3g}]")
    axes.axvline(chosen.suggestion, color="darkgoldenrod", lw=1.5, ls="--", label=f"suggested lr {chosen.suggestion:.3g}")
    for lr, style, name in (
        (chosen.steepest_lr, ":", "falls fastest"),
        (chosen.min_loss_lr, "-.", "lowest loss"),
        (chosen.divergence_lr, "-", "diverges"),
    ):
        axes.axvline(lr, color="0.4", lw=1, ls=style, label=f"{name} at {lr:.3g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    seeds = f"median of {chosen.seeds} seeds" if chosen.seeds > 1 else "one seed"
    axes.set_ylabel(f"training loss ({seeds}; faint: raw)")
    axes.set_ylim(*_loss_limits(sweep))
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.text(
        0.01, -0.02,
        f"The range for training is the divergence point / {chosen.divergence_lr / chosen.lr_low:.0f} to "
        f"/ {chosen.divergence_lr / chosen.lr_high:.0f}: a sweep of {chosen.length_text()} sees every feature at a "
        "higher learning rate\nthan a full run at a constant rate would, so the range sits well below the dip (see README, "
        "'How the range is read').",
        fontsize=8, va="top", color="0.3",
    )
    return figure


def _loss_limits(sweep: RangeSweep) -> tuple[float, float]:
    # Divergence shoots the loss up by orders of magnitude; keep the interesting part readable.
    smoothed = [v for r in sweep.results for v in r.smoothed]
    low, start = min(smoothed), max(r.smoothed[0] for r in sweep.results)
    span = max(start - low, 1e-6)
    return low - 0.1 * span, start + 0.6 * span


def write_tensorboard(sweep: RangeSweep, logdir: Path, figure: Figure | None = None) -> None:
    """One TensorBoard run per weight decay under `lr_range/`, with the loss curve by step and the plot."""
    for result in sweep.results:
        run = logdir / "lr_range" / f"weight_decay={result.weight_decay:g}"
        with SummaryWriter(str(run)) as writer:
            for step, (lr, loss, smoothed) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
                writer.add_scalar("lr_range/loss", loss, step)
                writer.add_scalar("lr_range/loss_smoothed", smoothed, step)
                writer.add_scalar("lr_range/learning_rate", lr, step)
            writer.add_text(
                "lr_range/result",
                f"range for training [{result.lr_low:.4g}, {result.lr_high:.4g}], suggested lr {result.suggestion:.4g}; "
                f"the loss falls fastest at {result.steepest_lr:.4g}, is lowest at {result.min_loss_lr:.4g} "
                f"and diverges at {result.divergence_lr:.4g}; stopped: {result.stop_reason}",
            )
            if figure is not None and result is sweep.chosen:
                writer.add_figure("lr_range/loss_vs_lr", figure, close=False)
