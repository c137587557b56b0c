"""The `pbt` command: thin sub-commands over the library.

Mistakes a user can make surface as `PbtError`: the command prints that one line and exits 2,
with no traceback and nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbt.config import ExperimentConfig, load_config, load_saved_config, read_json
from pbt.console import announce_packing, arm_progress, shown, upload, where
from pbt.errors import PbtError
from pbt.interrupts import as_interrupted, terminate_raises
from pbt.lr_range import RangeSweep
from pbt.space import SearchSpace

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow an option (`pbt run cfg.yaml --overwrite seed=1`), which argparse
    # alone would reject: KEY=VALUE words it did not place are overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in word or word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_exploits()
    try:
        with terminate_raises():
            return args.handler(args)
    except PbtError as err:
        print(f"pbt: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (see terminate_raises)
        stop = as_interrupted(err)
        print(stop.message(), file=sys.stderr)
        return stop.exit_code


def _show_exploits() -> None:
    """Print each exploit/explore step of the PBT scheduler as it happens: `lr 0.02 -> 0.024 (x1.2)`."""
    for name in ("pbt.scheduler", "pbt.pack_scheduler"):  # members on actors, members in packs
        scheduler_log = logging.getLogger(name)
        if not any(isinstance(h, _StdoutHandler) for h in scheduler_log.handlers):
            scheduler_log.addHandler(_StdoutHandler())
        scheduler_log.setLevel(logging.INFO)
        scheduler_log.propagate = False


class _StdoutHandler(logging.Handler):
    """Writes to whatever `sys.stdout` is at the time, so the lines interleave with pbt's own output."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"  [pbt] {record.getMessage()}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbt", description="Population-based training of PyTorch models on Ray Tune."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # name, handler, help, description, whether it replaces earlier results on --overwrite
    config_commands = [
        ("lr-find", run_lr_find, "run the LR range test and write lr_range.json, lr_range.png and TensorBoard data",
         "Run the LR range test (Smith) on the configured trainer: one epoch (at least lr_range.min_steps "
         "steps) with an exponentially growing learning rate. Prints the range and writes it to the experiment folder.", False),
        ("run", run_main_job, "the main job: range test, PBT, grid and one-cycle baselines, then the comparison",
         "Run everything in one experiment folder: the LR range test, PBT, the grid search and the one-cycle "
         "run for the same compute, then `pbt compare` on the folder.", True),
        ("pbt", run_pbt, "run population-based training on Ray Tune (after the range test, unless search.lr is given)",
         "Seed a population inside the LR range test's range and train it with Ray Tune's "
         "PopulationBasedTraining; writes lineage.json and prints the best member's schedule.", True),
        ("grid", run_grid, "run the grid-search baseline over the same space and budget as the population",
         "Train every point of a grid over lr x momentum x weight decay (values from the range test unless "
         "listed under grid:), as many points as the population has members, each for the same epochs.", True),
    ]
    for name, handler, summary, description, overwrite in config_commands:
        command = commands.add_parser(name, help=summary, description=description)
        _add_config_arguments(command, overwrite)
        command.set_defaults(handler=handler)
    sweep = commands.add_parser(
        "sweep", help="train each optimizer at many fixed learning rates until a target accuracy (and over widths)",
        description="For each optimizer (sweep.optimizers), train the model at sweep.rates log-spaced learning rates, "
        "each until it reaches sweep.target accuracy, diverges, or runs out of sweep.max_epochs / max_seconds. "
        "Reports per optimizer the band of rates that reach the target, the fastest, and the LR range test's range "
        "beside them; writes sweep.json, sweep.png and TensorBoard data. With --widths, repeats it per model width.")
    _add_config_arguments(sweep, overwrite=True)
    sweep.add_argument("--optimizers", default=None, metavar="A,B",
                       help="comma-separated, e.g. sgd+momentum,adam (default: sweep.optimizers, the six)")
    sweep.add_argument("--widths", default=None, metavar="W,W",
                       help="repeat the sweep at these values of the trainer's sweep.width_setting, e.g. 1,2,4,8")
    sweep.set_defaults(handler=run_sweep)
    compare = commands.add_parser(
        "compare",
        help="compare the arms of experiment folders: table, summary.json, plots, TensorBoard runs",
        description="Read the arms (pbt, grid, one_cycle) of each DIR and report accuracy against compute, the "
        "test accuracy of the run chosen by validation, compute to a target accuracy, and PBT's schedule.",
    )
    compare.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders written by `pbt run` (or their URIs, e.g. s3://bucket/results/mnist1d)")
    compare.add_argument("--target", type=float, default=None,
                         help="validation accuracy to time (default: compare.target_val_acc, else the grid's final best)")
    compare.set_defaults(handler=run_compare)
    resume = commands.add_parser(
        "resume",
        help="finish an experiment whose `pbt` process was killed",
        description="Continue the job recorded in DIR (job.json): finished runs are kept, unfinished ones "
        "continue from their last checkpoint (Tuner.restore), arms not yet started run, then the comparison.",
    )
    resume.add_argument("folder", metavar="DIR", help="an experiment folder (or URI) written by `pbt run`, `pbt pbt` or `pbt grid`")
    resume.add_argument("--address", default=None, help="Ray cluster to run on (default: $RAY_ADDRESS, else local)")
    resume.set_defaults(handler=run_resume)
    replay = commands.add_parser(
        "replay",
        help="retrain the best PBT member's schedule from scratch as one run",
        description="Read DIR/lineage.json and train one fresh model through the best member's schedule.",
    )
    replay.add_argument("folder", metavar="DIR", help="an experiment folder (or URI) written by `pbt pbt`")
    replay.set_defaults(handler=run_replay)
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser, overwrite: bool = False) -> None:
    parser.add_argument("config", help="experiment YAML file, e.g. configs/mnist1d.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override config values, e.g. trainer.optimizer=adam lr_range.seeds=5")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on, HOST:PORT or 'auto' (default: $RAY_ADDRESS, else a fresh local Ray)")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace earlier results of the same experiment (default: refuse)")


def load_checked(args: argparse.Namespace) -> ExperimentConfig:
    """The config, its trainer section, its storage and its cluster checked: fail before anything starts."""
    from pbt.registry import resolve_trainer, trainer_settings

    from pbt.experiment import check_cluster_storage, check_storage

    config = load_config(args.config, args.overrides)
    # The settings as the trainer's schema makes them here (defaults filled, paths made absolute)
    # are what every worker gets: a worker runs in another folder.
    config = config.model_copy(update={"trainer": trainer_settings(resolve_trainer(config.trainable), config.trainer)})
    check_storage(config)
    hosts = connect(args.address)  # a cluster that cannot be reached fails here, before anything is written
    check_cluster_storage(config, hosts)
    check_member_resources(config, args.address)
    config.storage.sync_down()  # a URI's earlier results, e.g. the pbt arm a later `pbt grid` is compared with
    return config


def connect(address: str | None) -> int:
    """Join the cluster at `address` or `RAY_ADDRESS` now, if one is named (else Ray starts locally
    when needed); returns how many machines the cluster spans (1 without one)."""
    import ray

    from pbt.launch import ensure_ray

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return 1
    ensure_ray(address=address)  # checks the address first: a bad or dead one is one line, at once
    return len({node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]})


def check_member_resources(config: ExperimentConfig, address: str | None) -> None:
    """Refuse resources no machine has (Tune would wait for them forever); on an autoscaling cluster, say so."""
    from pbt.resources import require_resources

    note = require_resources(config.resources, on_cluster=bool(address or os.environ.get("RAY_ADDRESS")))
    if note:
        print(note)


def run_lr_find(args: argparse.Namespace) -> int:
    config = load_checked(args)
    range_test(config)
    upload(config.storage)
    return 0


def range_test(config: ExperimentConfig) -> RangeSweep:
    """Run, print and save the LR range test of `config`."""
    from pbt.lr_range import find_lr_range
    from pbt.lr_range_report import save_range_sweep

    settings = config.lr_range
    length = f"{settings.max_steps} steps" if settings.max_steps else f"one epoch (at least {settings.min_steps} steps)"
    print(f"LR range test: {config.name} ({config.trainable}), lr {settings.lr_min:g} -> {settings.lr_max:g}, "
          f"{settings.seeds} seed(s) x {len(settings.weight_decays)} weight decay(s), {length} each")
    started = time.perf_counter()
    progress = ProgressBar(settings.seeds)
    sweep = find_lr_range(config, on_step=progress.step, on_result=progress.result)
    progress.close()
    paths = save_range_sweep(sweep, config, config.experiment_dir)
    print_range_sweep(sweep, time.perf_counter() - started)
    print(f"\nWrote {shown(paths['json'])}\n      {shown(paths['plot'])}")
    print(f"      {shown(paths['tensorboard'])}   (view: tensorboard --logdir {shown(paths['tensorboard'])})")
    return sweep


def run_main_job(args: argparse.Namespace) -> int:
    config = load_checked(args)
    arms = ("pbt", "grid", "one_cycle") if config.one_cycle.enabled else ("pbt", "grid")
    return start_job(config, arms, args.overwrite)


def run_pbt(args: argparse.Namespace) -> int:
    return start_job(load_checked(args), ("pbt",), args.overwrite)


def run_grid(args: argparse.Namespace) -> int:
    return start_job(load_checked(args), ("grid",), args.overwrite)


def run_sweep(args: argparse.Namespace) -> int:
    from pbt.sweep_stage import sweep_stage

    if args.optimizers:
        args.overrides.append(f"sweep.optimizers=[{args.optimizers}]")
    config = load_checked(args)
    widths = _widths(args.widths)
    return sweep_stage(config, widths, args.overwrite)


def _widths(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        widths = [float(word) for word in text.split(",") if word.strip()]
    except ValueError:
        raise PbtError(f"--widths takes numbers separated by commas, e.g. 1,2,4,8, but got {text!r}") from None
    if not widths or min(widths) <= 0 or len(set(widths)) != len(widths):
        raise PbtError(f"--widths takes distinct positive numbers, e.g. 1,2,4,8, but got {text!r}")
    return widths


def run_resume(args: argparse.Namespace) -> int:
    from pbt.experiment import check_cluster_storage, load_job

    config, arms, space = load_job(args.folder)
    check_cluster_storage(config, connect(args.address))
    check_member_resources(config, args.address)
    print(f"Resuming {where(config.storage)}: {', '.join(arms)} (finished runs are kept, "
          "unfinished ones continue from their last checkpoint)")
    return run_arms(config, space, arms)


def start_job(config: ExperimentConfig, arms: tuple[str, ...], overwrite: bool) -> int:
    """Check the folder, run the range test, then the arms (and the comparison when there are several)."""
    from pbt.experiment import check_fresh, save_job
    from pbt.packing import require_population_packs

    check_fresh(config.storage, arms, overwrite)
    if "pbt" in arms:  # before the range test: a population whose packs cannot all run would wait
        note = require_population_packs(config)
        if note:
            print(f"note: {note}")
    try:
        space = prepare_space(config)
    except KeyboardInterrupt as err:
        raise as_interrupted(err, where="before training began: nothing to resume, run the command again") from None
    save_job(config, arms, space)
    config.storage.sync_up()
    return run_arms(config, space, arms)


def run_arms(config: ExperimentConfig, space: SearchSpace, arms: tuple[str, ...]) -> int:
    started = time.perf_counter()
    stages = {"pbt": pbt_stage, "grid": grid_stage, "one_cycle": one_cycle_stage}
    failed = 0
    try:
        for arm in arms:
            failed += stages[arm](config, space)
            config.storage.sync_up()
    except KeyboardInterrupt as err:
        config.storage.sync_up()  # a URI gets the reports so far: `pbt resume` may run on another machine
        raise as_interrupted(err, resume=where(config.storage)) from None
    if len(arms) > 1:
        compare_stage(config.experiment_dir)
        print(f"\nAll done in {(time.perf_counter() - started) / 60:.1f} min. "
              f"View: tensorboard --logdir {shown(config.experiment_dir / 'tensorboard')}")
    upload(config.storage)
    return 0 if not failed else 1


def run_compare(args: argparse.Namespace) -> int:
    from pbt.experiment import open_experiment

    for location in args.folders:
        storage = open_experiment(location)
        compare_stage(storage.local, args.target)
        upload(storage)
    return 0


def prepare_space(config: ExperimentConfig) -> SearchSpace:
    """The range test (unless `search.lr` is given), then the bounds every arm searches."""
    from pbt.experiment import save_config
    from pbt.space import search_space

    sweep = range_test(config) if config.search.lr is None else None
    space = search_space(config, sweep)
    save_config(config)
    print("\nSearch space (the population starts inside it and explores within it; the grid covers it):")
    for name, bound in space.searched.items():  # no momentum line for an optimizer without momentum
        below = f"; exploration may anneal it down to {bound.low:.3g}" if bound.start > bound.low else ""
        print(f"  {name:<13} [{bound.start:.3g}, {bound.high:.3g}]{' (log)' if bound.log else ''}{below}")
    return space


def pbt_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    """Run PBT, print the best member and its schedule; returns the number of failed members."""
    from pbt.experiment import pbt_arm
    from pbt.lineage import format_schedule

    population = config.population
    print(f"\nPBT: {population.size} members x {population.epochs} epochs, exploit/explore every "
          f"{population.perturbation_interval} epochs (the bottom {population.quantile_fraction:.0%} copy the top "
          f"{population.quantile_fraction:.0%}, then perturb x{population.perturbation_factors[0]:g} or "
          f"x{population.perturbation_factors[1]:g} or resample with p={population.resample_probability:g})")
    packing = announce_packing(config, "pbt", [{"member": member} for member in range(population.size)])
    lineage, errors = pbt_arm(config, space, [arm_progress(config, "pbt", "pbt", population.size)], packing)
    best = lineage["best"]
    print(f"\nBest member: {best['member']}   validation accuracy {best['final_val_acc']:.4f}"
          f"{_test_text(best['final_test_acc'], ' (reported only; chosen by validation)')}")
    print(f"{len(lineage['exploits'])} exploits in all; the best member's schedule:\n")
    print(format_schedule(best["schedule"]))
    _print_errors("member", errors)
    print(f"\nWrote {shown(config.experiment_dir / 'lineage.json')}   (replay it: pbt replay {where(config.storage)})")
    print(f"      {where(config.storage, 'pbt')}   (Ray Tune's trial folders and checkpoints)")
    return len(errors)


def grid_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    """Run the grid baseline and print its best point; returns the number of failed points."""
    from pbt.compare import load_arms
    from pbt.experiment import grid_arm
    from pbt.grid import grid_axes, grid_points

    axes = grid_axes(config, space)
    points = len(grid_points(axes))  # not the axes' product: an optimizer without momentum has no momentum axis
    print(f"\nGrid: {points} points x {config.population.epochs} epochs "
          f"(the population: {config.population.size} members x {config.population.epochs} epochs)")
    for name, values in axes.items():
        if name == "momentum" and values == [0.0]:
            continue  # no optimizer of the grid has momentum: not an axis
        print(f"  {name:<13} {', '.join(v if isinstance(v, str) else f'{v:.3g}' for v in values)}")
    if points != config.population.size:
        print(f"  note: {points} grid points for {config.population.size} population members: "
              f"the grid spends {points / config.population.size:.0%} of the population's epochs")
    packing = announce_packing(config, "grid", grid_points(axes), kind="grid points")
    _, errors = grid_arm(config, space, [arm_progress(config, "grid", "grid", points)], packing)
    chosen = load_arms(config.experiment_dir)["grid"].chosen
    if chosen:
        print(f"\nBest grid point: {chosen['label']}   validation accuracy {chosen['val_acc']:.4f}"
              f"{_test_text(chosen.get('test_acc'))}")
    _print_errors("grid point", errors)
    return len(errors)


def one_cycle_stage(config: ExperimentConfig, space: SearchSpace) -> int:
    from pbt.compare import load_arms
    from pbt.experiment import one_cycle_arm

    settings = config.one_cycle
    print(f"\nOne-cycle: one run of {config.population.epochs} epochs, lr up to {settings.max_lr or space.lr.high:.3g} "
          f"and down, momentum {settings.max_momentum:g} -> {settings.base_momentum:g} -> {settings.max_momentum:g}")
    _, errors = one_cycle_arm(config, space, [arm_progress(config, "one_cycle", "one-cycle", 1)])
    chosen = load_arms(config.experiment_dir)["one_cycle"].chosen
    if chosen:
        print(f"One-cycle run: validation accuracy {chosen['val_acc']:.4f}{_test_text(chosen.get('test_acc'))}")
    _print_errors("run", errors)
    return len(errors)


def compare_stage(folder: Path, target: float | None = None) -> None:
    from pbt.experiment import compare_folder
    from pbt.report import format_table

    summary = compare_folder(folder, target)
    print(f"\nComparison of {shown(folder)} (compute = epochs and seconds actually trained, all runs of an arm):\n")
    print(format_table(summary))
    pbt_arm = summary["arms"].get("pbt")
    grid_arm = summary["arms"].get("grid")
    if pbt_arm and grid_arm and grid_arm["chosen"]:
        chosen = grid_arm["chosen"]
        momentum = f"momentum {chosen['momentum']:.3f}, " if chosen["momentum"] else ""
        print(f"\nThe grid's best fixed point: lr {chosen['lr']:.4g}, {momentum}"
              f"weight decay {chosen['weight_decay']:.3g}")
    files = summary["files"]
    print(f"\nWrote {shown(Path(files['summary']))}\n      {shown(Path(files['accuracy_plot']))}")
    print(f"      {shown(Path(files['schedule_plot']))}\n      {shown(Path(files['tensorboard']))}/compare")


def _test_text(test_acc: float | None, note: str = "") -> str:
    """`   test accuracy 0.8123` after a validation accuracy; nothing when the trainer has no test split."""
    return "" if test_acc is None else f"   test accuracy {test_acc:.4f}{note}"


def _print_errors(what: str, errors: list) -> None:
    if errors:
        print(f"\n{len(errors)} {what}(s) failed; the first: {errors[0]}")


def run_replay(args: argparse.Namespace) -> int:
    from pbt.experiment import open_experiment
    from pbt.lineage import replay

    storage = open_experiment(args.folder)
    folder = storage.local
    config = load_saved_config(folder)
    best = read_json(folder / "lineage.json")["best"]
    schedule = best["schedule"]
    print(f"Replaying member {best['member']}'s schedule: {len(schedule)} epochs from scratch, one run")
    records = replay(config, schedule, on_epoch=lambda i, n, m: print(
        f"  epoch {i:>3}/{n}  lr {m['lr']:.3g}  val acc {m['val_acc']:.4f}") if i % 5 == 0 or i == n else None)
    print()
    print(format_replay_table(best, records[-1]))
    (folder / "replay.json").write_text(json.dumps({"member": best["member"], "epochs": records}, indent=1))
    print(f"\nWrote {shown(folder / 'replay.json')}")
    upload(storage)
    return 0


def format_replay_table(best: dict[str, Any], final: dict[str, float]) -> str:
    """PBT's best member beside its replay; a test column only when both have a test accuracy."""
    columns = [("val acc", best["final_val_acc"], final["val_acc"])]
    if best.get("final_test_acc") is not None and final.get("test_acc") is not None:
        columns.append(("test acc", best["final_test_acc"], final["test_acc"]))
    return "\n".join([
        f"{'':<10}" + "".join(f"{name:>10}" for name, _, _ in columns),
        f"{'PBT':<10}" + "".join(f"{pbt:>10.4f}" for _, pbt, _ in columns),
        f"{'replay':<10}" + "".join(f"{replayed:>10.4f}" for _, _, replayed in columns),
        f"{'diff':<10}" + "".join(f"{replayed - pbt:>+10.4f}" for _, pbt, replayed in columns),
    ])


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
    print(f"Sweep                 {chosen.length_text()}; it ran {len(chosen.lrs)} steps")
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


if __name__ == "__main__":
    sys.exit(main())
