"""What `pbt sweep` shows: a table per sweep, the time-to-target plot, the width plot, TensorBoard.

The plot answers at a glance whether the LR range test agrees with the brute force: above, time
to target against learning rate, one line per optimizer; below, one row per optimizer with every
run's outcome (reached, never reached, diverged) and the range test's [lr_low, lr_high] as a bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import rcParams
from matplotlib.figure import Figure  # no pyplot: files only, no backend to choose
from torch.utils.tensorboard import SummaryWriter

from pbt.stages.sweep_runs import DIVERGED, FAILED, NOT_REACHED, REACHED

OUTCOME_MARKERS = {REACHED: ("o", "tab:green"), NOT_REACHED: ("o", "lightgray"), DIVERGED: ("x", "tab:red"),
                   FAILED: ("s", "black")}


def format_sweep_table(optimizers: dict[str, dict[str, Any]]) -> str:
    """One line per optimizer: its range test, its band, the fastest rate, and whether they agree."""
    lines = [f"{'optimizer':<13} {'range test':<21} {'band that reaches the target':<32} {'fastest lr':<26} range in band"]
    for name, entry in optimizers.items():
        test, found = entry["range_test"], entry["band"]
        tested = f"[{test['lr_low']:.3g}, {test['lr_high']:.3g}]" if "lr_low" in test else "none (see below)"
        if found["low"] is None:
            banded, fastest = f"none ({found['reached']}/{found['runs']} reached)", "-"
        else:
            banded = f"[{found['low']:.3g}, {found['high']:.3g}] ({found['reached']}/{found['runs']} reached)"
            best = found["fastest"]
            fastest = f"{best['lr']:.3g} ({best['epochs_to_target']} ep, {best['seconds_to_target']:.1f} s)"
        inside = {True: "yes", False: "NO", None: "-"}[entry["range_inside_band"]]
        lines.append(f"{name:<13} {tested:<21} {banded:<32} {fastest:<26} {inside}")
    for name, entry in optimizers.items():
        if "error" in entry["range_test"]:
            lines.append(f"  {name}: the range test found no range: {entry['range_test']['error']}")
        if entry["band"]["outside"]:
            outside = ", ".join(f"{lr:.3g}" for lr in entry["band"]["outside"])
            lines.append(f"  {name}: also reached the target outside the band, at lr {outside}")
    return "\n".join(lines)


def sweep_figure(optimizers: dict[str, dict[str, Any]], target_text: str, title: str) -> Figure:
    names = list(optimizers)
    figure = Figure(figsize=(9, 5.5 + 0.35 * len(names)))
    times, outcomes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 0.5 + 0.35 * len(names)]})
    colors = dict(zip(names, rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for name, entry in optimizers.items():
        _plot_time_to_target(times, entry["runs"], color=colors[name], label=name)
    _time_axes(times, f"{title}\ntime to {target_text}; runs that never reached it are in the rows below")
    for row, (name, entry) in enumerate(optimizers.items()):
        test = entry["range_test"]
        if "lr_low" in test:
            outcomes.plot([test["lr_low"], test["lr_high"]], [row, row], color=colors[name], linewidth=9, alpha=0.35,
                          solid_capstyle="butt", label="LR range test's [lr_low, lr_high]" if row == 0 else None)
        for status, (marker, color) in OUTCOME_MARKERS.items():
            lrs = [run["lr"] for run in entry["runs"] if run["status"] == status]
            if lrs:
                outcomes.scatter(lrs, [row] * len(lrs), marker=marker, color=color, s=18, zorder=3,
                                 label=status if status not in _labelled(outcomes) else None)
    outcomes.set_yticks(range(len(names)), names)
    outcomes.set_ylim(len(names) - 0.5, -0.5)
    outcomes.set_xlabel("learning rate (log)")
    outcomes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    return figure


def _labelled(axes: Any) -> set[str]:
    return set(axes.get_legend_handles_labels()[1])


def _plot_time_to_target(axes: Any, runs: list[dict[str, Any]], **style: Any) -> None:
    reached = [run for run in runs if run["status"] == REACHED]
    axes.plot([run["lr"] for run in reached], [run["seconds_to_target"] for run in reached], "o-", markersize=4, **style)


def _time_axes(axes: Any, title: str) -> None:
    axes.set_xscale("log")
    axes.set_ylabel("compute seconds to target")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if _labelled(axes):
        axes.legend(fontsize=8)


def width_figure(widths: list[dict[str, Any]], transfer: dict[str, dict[str, Any]], title: str) -> Figure:
    """Left: time to target against lr at each width (first optimizer); right: the fastest time
    against the number of weights with the fitted line, per optimizer."""
    figure = Figure(figsize=(12, 4.5))
    curves, fits = figure.subplots(1, 2)
    name = next(iter(transfer))
    for width in widths:
        _plot_time_to_target(curves, width["optimizers"][name]["runs"],
                             label=f"width {width['width']:g} ({width['weights']:,} weights)")
        best = width["optimizers"][name]["band"]["fastest"]
        if best:
            curves.axvline(best["lr"], color=curves.get_lines()[-1].get_color(), linestyle=":", alpha=0.7)
    curves.set_xlabel("learning rate (log); dotted: the fastest at each width")
    _time_axes(curves, f"{name}: time to target at each width")
    for optimizer, found in transfer.items():
        points = found["points"]
        if not points:
            continue
        x = [p["weights"] for p in points]
        dots = fits.plot(x, [p["seconds_to_target"] for p in points], "o", label=optimizer)[0]
        fit = found["fit"]
        if fit:
            ends = [min(x), max(x)]
            fits.plot(ends, [fit["c"] + fit["k"] * n for n in ends], "-", color=dots.get_color(), alpha=0.7,
                      label=f"{optimizer}: {fit['c']:.2f} s {fit['k'] * 1e6:+.3g} us x n   (R^2 {fit['r2']:.3f})")
    fits.set_xlabel("weights n")
    fits.set_ylabel("fastest compute seconds to target")
    fits.set_title("time to target against model size")
    fits.grid(True, alpha=0.3)
    if _labelled(fits):
        fits.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def write_sweep_tensorboard(folder: Path, figures: dict[str, Figure], text: str) -> None:
    """The plots as TensorBoard images and the table as text, in the run `folder`."""
    writer = SummaryWriter(str(folder))
    for tag, figure in figures.items():
        writer.add_figure(tag, figure, close=False)
    writer.add_text("sweep/table", "    " + text.replace("\n", "\n    "))  # indented: markdown code block
    writer.close()
