"""An LR range test's report: what `pbt lr-find` prints (a progress bar, then the range and the
features read off the curve), and what it writes to the experiment folder (JSON, a PNG plot,
TensorBoard runs)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: files only, no backend to choose
from torch.utils.tensorboard import SummaryWriter

from pbt.config import ExperimentConfig
from pbt.range_test.finder import RangeResult, RangeTest, find_lr_range, reading_basis, shift_text
from pbt.storage.layout import RANGE_FILE, RANGE_PLOT, TENSORBOARD
from pbt.storage.store import shown


def save_range_test(sweep: RangeTest, config: ExperimentConfig, folder: Path) -> dict[str, Path]:
    """Write `lr_range.json`, `lr_range.png` and `tensorboard/lr_range/...`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / RANGE_FILE,
        "plot": folder / RANGE_PLOT,
        "tensorboard": folder / TENSORBOARD,
    }
    record = {"config": config.model_dump(mode="json"), **sweep.to_dict()}
    paths["json"].write_text(json.dumps(record, indent=1))
    optimizer = config.trainer.get("optimizer")
    what = config.trainable + (f", {optimizer}" if optimizer else "")
    figure = range_figure(sweep, title=f"LR range test: {config.name} ({what})")
    figure.savefig(paths["plot"], dpi=120, bbox_inches="tight")
    write_tensorboard(sweep, paths["tensorboard"], figure)
    return paths


def load_range_test(path: Path) -> RangeTest:
    """The range test an `lr_range.json` holds, written by this version or an older one."""
    return RangeTest.from_dict(json.loads(Path(path).read_text()))


def range_figure(sweep: RangeTest, title: str) -> Figure:
    """Loss against learning rate (log axis) per weight decay, the features marked, the range shaded."""
    figure = Figure(figsize=(9, 4.8))
    axes = figure.subplots()
    chosen = sweep.chosen
    for result in sweep.results:
        is_chosen = result is chosen
        label = f"weight decay {result.weight_decay:g}" + (" (chosen)" if is_chosen and len(sweep.results) > 1 else "")
        (line,) = axes.plot(result.lrs, result.smoothed, lw=2 if is_chosen else 1.2, label=f"{label}: smoothed loss")
        axes.plot(result.lrs, result.losses, color=line.get_color(), lw=0.6, alpha=0.35)
    axes.axvspan(chosen.lr_low, chosen.lr_high, color="gold", alpha=0.35,
                 label=f"range for training [{chosen.lr_low:.3g}, {chosen.lr_high:.3g}]")
    axes.axvline(chosen.suggestion, color="darkgoldenrod", lw=1.5, ls="--", label=f"suggested lr {chosen.suggestion:.3g}")
    if chosen.lr_ceiling > chosen.lr_high:
        axes.axvspan(chosen.lr_high, chosen.lr_ceiling, color="gold", alpha=0.12,
                     label=f"exploration may rise up to {chosen.lr_ceiling:.3g}")
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
        f"The range for training is read below a basis between the divergence point and the lowest loss "
        f"({chosen.lr_high:.3g} = basis / {reading_basis(chosen) / chosen.lr_high:.3g}): a sweep of {chosen.length_text()} "
        "sees every feature at a higher\nlearning rate than a full run at a constant rate would, so the range sits well "
        "below the dip (see README, 'How the range is read').",
        fontsize=8, va="top", color="0.3",
    )
    return figure


def _loss_limits(sweep: RangeTest) -> tuple[float, float]:
    # Divergence shoots the loss up by orders of magnitude; keep the interesting part readable.
    smoothed = [v for r in sweep.results for v in r.smoothed]
    low, start = min(smoothed), max(r.smoothed[0] for r in sweep.results)
    span = max(start - low, 1e-6)
    return low - 0.1 * span, start + 0.6 * span


def write_tensorboard(sweep: RangeTest, logdir: Path, figure: Figure | None = None) -> None:
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


def run_range_test(config: ExperimentConfig) -> RangeTest:
    """Run, print and save the LR range test of `config`."""
    settings = config.lr_range
    length = f"{settings.max_steps} steps" if settings.max_steps else f"one epoch (at least {settings.min_steps} steps)"
    print(f"LR range test: {config.name} ({config.trainable}), lr {settings.lr_min:g} -> {settings.lr_max:g}, "
          f"{settings.seeds} seed(s) x {len(settings.weight_decays)} weight decay(s), {length} each")
    started = time.perf_counter()
    progress = ProgressBar(settings.seeds)
    sweep = find_lr_range(config, on_step=progress.step, on_result=progress.result)
    progress.close()
    config.storage.delete(f"{TENSORBOARD}/lr_range")  # an earlier range test's runs would show beside this one's
    paths = save_range_test(sweep, config, config.experiment_dir)
    print_range_test(sweep, time.perf_counter() - started)
    print(f"\nWrote {shown(paths['json'])}\n      {shown(paths['plot'])}")
    print(f"      {shown(paths['tensorboard'])}   (view: tensorboard --logdir {shown(paths['tensorboard'])})")
    return sweep


def print_range_test(sweep: RangeTest, seconds: float) -> None:
    """The range, the features it was read from and how clearly the curve showed them."""
    chosen = sweep.chosen
    if len(sweep.results) > 1:
        print(f"\n{'weight decay':>12}  {'lr_low':>9}  {'lr_high':>9}  {'diverges at':>11}  stopped because")
        for r in sweep.results:
            mark = "  <- chosen: largest weight decay that keeps a high lr" if r is chosen else ""
            print(f"{r.weight_decay:>12g}  {r.lr_low:>9.3g}  {r.lr_high:>9.3g}  {r.divergence_lr:>11.3g}  {r.stop_reason}{mark}")
        for wd, reason in sweep.failures.items():
            print(f"{float(wd):>12g}  no range: {reason}")
    print(f"\nLearning-rate range   [{chosen.lr_low:.3g}, {chosen.lr_high:.3g}]   suggested lr {chosen.suggestion:.3g}")
    if chosen.lr_ceiling > chosen.lr_high:
        print(f"Exploration ceiling   {chosen.lr_ceiling:.3g} (PBT may explore learning rates up to it)")
    spread = seeds_text(chosen)
    if spread:
        print(f"Seeds                 {spread}")
    print(f"Read off the curve    falls fastest at {chosen.steepest_lr:.3g}, lowest at {chosen.min_loss_lr:.3g}, "
          f"diverges at {chosen.divergence_lr:.3g}")
    if chosen.read_as:  # a result saved before it was recorded has none
        print(f"Read for              {shift_text(chosen.read_as)}")
    if chosen.steps_per_decade:  # a result saved before these were recorded has none
        minimum = "a sharp minimum" if chosen.flat_decades < 0.1 else f"near its lowest over {chosen.flat_decades:.1f} decades"
        print(f"Curve                 fell {chosen.fall:.3g} ({chosen.fall / max(chosen.noise, 1e-12):.0f}x its batch noise "
              f"{chosen.noise:.2g}), {chosen.steps_per_decade:.0f} steps a decade, {minimum}")
    print(f"Weight decay          {chosen.weight_decay:g}")
    print(f"Sweep                 {chosen.length_text()}; it ran {len(chosen.lrs)} steps")
    print(f"Stopped because       {chosen.stop_reason}   ({seconds:.1f} s)")
    if chosen.doubts:
        print(f"Warning: the curve is ambiguous: {'; '.join(chosen.doubts)}; look at lr_range.png before trusting the range")


# How far (max / min) the range read off the seeds' median curve may move with the experiment's seed.
SEED_SPREAD_LIMIT = 2.0
# In units of the scatter (standard deviation) of log lr_high between seeds, when it is normal:
# OWN_RANGE[n], the expected max - min over n seeds; MEDIAN_RANGE[n], the expected max - min of the
# median of n seeds over 5 experiments (seeds 0-4, as `scripts/range_spread.py` measures it).
# Monte Carlo, 200,000 draws (`python scripts/range_spread.py --constants`).
OWN_RANGE = {1: 0.0, 2: 1.12, 3: 1.69, 4: 2.06, 5: 2.33, 6: 2.53, 7: 2.7, 8: 2.85, 9: 2.97, 10: 3.08, 11: 3.17,
             12: 3.26, 13: 3.34, 14: 3.41, 15: 3.47, 16: 3.53}
MEDIAN_RANGE = {1: 2.33, 2: 1.64, 3: 1.56, 4: 1.27, 5: 1.25, 6: 1.08, 7: 1.07, 8: 0.95, 9: 0.95, 10: 0.86, 11: 0.86,
                12: 0.8, 13: 0.79, 14: 0.74, 15: 0.74, 16: 0.7}
MOST_SEEDS = max(n for n in OWN_RANGE if n % 2)  # the largest odd lr_range.seeds (pbt.config allows 16)


def median_spread(own: float, read: int, seeds: int) -> float:
    """How far (max / min) the range read off the median of `seeds` seeds' curves is expected to move
    over 5 experiment seeds, when `read` seeds' own lr_high lie `own` (max / min) apart: the scatter
    those seeds show, scaled to the median of `seeds`."""
    return own ** (MEDIAN_RANGE[seeds] / OWN_RANGE[read])


def more_seeds(own: float, read: int, seeds: int) -> int | None:
    """The fewest seeds above `seeds` expected to keep the median's range within `SEED_SPREAD_LIMIT`
    (odd: the median of one curve, not the mean of two), None where not even `MOST_SEEDS` would.
    Two seeds show too little of the scatter to say how many: five, or the next odd count."""
    odd = [n for n in range(seeds + 1, MOST_SEEDS + 1) if n % 2]
    if read == 2:
        return next((n for n in odd if n >= 5), None)
    return next((n for n in odd if median_spread(own, read, n) <= SEED_SPREAD_LIMIT), None)


def seeds_text(result: RangeResult) -> str | None:
    """How far the seeds' own ranges lie apart and so how far the range read off their median curve
    moves with the experiment's seed, in one line (None: one seed, or a result saved before the
    seeds' own ranges were recorded); where that is over `SEED_SPREAD_LIMIT`, how many seeds would do.
    Of two seeds, only how far apart they lie is said."""
    if result.seeds < 2 or not result.seed_ranges:
        return None
    highs = result.own_highs()
    unread = [str(own["seed"]) for own in result.seed_ranges if "lr_high" not in own]
    notes, tail = [], "; the range above reads their median curve"
    if len(highs) >= 2:
        low, high = min(highs.values()), max(highs.values())
        head = f"their own lr_high from {low:.3g} to {high:.3g}"
        notes.append(f"{_times(high / low)} apart")
        moves = high / low if len(highs) == 2 else median_spread(high / low, len(highs), result.seeds)
        if len(highs) > 2:
            tail += f", which moves about {_times(moves)} with the seed"
        if moves > SEED_SPREAD_LIMIT:
            more = more_seeds(high / low, len(highs), result.seeds)
            tail += f": over {SEED_SPREAD_LIMIT:g}x" + (" apart" if len(highs) == 2 else "") + (
                f", run more with lr_range.seeds={more}" if more
                else f" even with {MOST_SEEDS} seeds; look at lr_range.png or give the range as search.lr")
    elif highs:
        head = "".join(f"seed {seed}'s own lr_high {lr:.3g}" for seed, lr in highs.items())
    else:
        head, unread = "no seed's own curve reads a range alone", []
    if unread:
        notes.append(f"seed {unread[0]}'s curve reads no range alone" if len(unread) == 1
                     else f"the curves of seeds {', '.join(unread)} read no range alone")
    return f"{result.seeds} sweeps: {head}" + (f" ({'; '.join(notes)})" if notes else "") + tail


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


class ProgressBar:
    """A one-line progress bar on stderr for an interactive terminal; sparse lines otherwise."""

    def __init__(self, sweeps_per_decay: int, width: int = 30, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.width, self.sweeps = width, sweeps_per_decay
        self.sweep = 0
        self.open_line = False  # a live line is drawn and not yet ended

    def step(self, step: int, total: int, lr: float, loss: float) -> None:
        if step == 1:
            self.sweep += 1
        if not self.live and step % max(1, total // 4):
            return  # in a log file, a line per quarter of a sweep is enough
        filled = round(self.width * step / total)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"  sweep {self.sweep}/{self.sweeps} [{bar}] {step:>4}/{total}  lr {lr:.2e}  loss {loss:.4g}"
        self.stream.write(("\r" + line) if self.live else line + "\n")
        self.stream.flush()
        self.open_line = self.live

    def result(self, done: int, total: int, weight_decay: float) -> None:
        if total > 1:
            self._end_line()
            self.stream.write(f"  weight decay {weight_decay:g} done ({done}/{total})\n")

    def close(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False
