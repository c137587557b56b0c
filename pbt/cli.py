"""The `pbt` command: thin sub-commands over the library.

Mistakes a user can make surface as `PbtError`: the command prints that one line and exits 2,
with no traceback and nothing written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pbt.config import load_config
from pbt.errors import PbtError
from pbt.lr_range import RangeSweep

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except PbtError as err:
        print(f"pbt: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pbt: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbt", description="Population-based training of PyTorch models on Ray Tune."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lr_find = commands.add_parser(
        "lr-find",
        help="run the LR range test and write lr_range.json, lr_range.png and TensorBoard data",
        description="Run the LR range test (Smith) on the configured trainer: at most one epoch "
        "with an exponentially growing learning rate. Prints the range and writes it to the experiment folder.",
    )
    _add_config_arguments(lr_find)
    lr_find.set_defaults(handler=run_lr_find)
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file, e.g. configs/mnist1d.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override config values, e.g. trainer.optimizer=adam lr_range.seeds=5")


def run_lr_find(args: argparse.Namespace) -> int:
    from pbt.lr_range import find_lr_range
    from pbt.lr_range_report import save_range_sweep
    from pbt.registry import resolve_trainer, trainer_settings

    config = load_config(args.config, args.overrides)
    trainer_settings(resolve_trainer(config.trainable), config.trainer)  # fail on a bad trainer section now
    settings = config.lr_range
    print(f"LR range test: {config.name} ({config.trainable}), lr {settings.lr_min:g} -> {settings.lr_max:g}, "
          f"{settings.seeds} seed(s) x {len(settings.weight_decays)} weight decay(s), at most one epoch each")
    started = time.perf_counter()
    progress = ProgressBar(settings.seeds)
    sweep = find_lr_range(config, on_step=progress.step, on_result=progress.result)
    progress.close()
    paths = save_range_sweep(sweep, config, config.experiment_dir)
    print_range_sweep(sweep, time.perf_counter() - started)
    print(f"\nWrote {_shown(paths['json'])}\n      {_shown(paths['plot'])}")
    print(f"      {_shown(paths['tensorboard'])}   (view: tensorboard --logdir {_shown(paths['tensorboard'])})")
    return 0


def print_range_sweep(sweep: RangeSweep, seconds: float) -> None:
    chosen = sweep.chosen
    if len(sweep.results) > 1:
        print(f"\n{'weight decay':>12}  {'lr_low':>9}  {'lr_high':>9}  {'diverges at':>11}  stopped because")
        for r in sweep.results:
            mark = "  <- chosen: largest weight decay that keeps a high lr" if r is chosen else ""
            print(f"{r.weight_decay:>12g}  {r.lr_low:>9.3g}  {r.lr_high:>9.3g}  {r.divergence_lr:>11.3g}  {r.stop_reason}{mark}")
        for wd, reason in sweep.failures.items():
            print(f"{float(wd):>12g}  no range: {reason}")
    print(f"\nLearning-rate range   [{chosen.lr_low:.3g}, {chosen.lr_high:.3g}]   suggested lr {chosen.suggestion:.3g}")
    print(f"Read off the curve    falls fastest at {chosen.steepest_lr:.3g}, lowest at {chosen.min_loss_lr:.3g}, "
          f"diverges at {chosen.divergence_lr:.3g}")
    print(f"Weight decay          {chosen.weight_decay:g}")
    print(f"Stopped because       {chosen.stop_reason}   ({seconds:.1f} s)")


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


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it; easier to copy."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
