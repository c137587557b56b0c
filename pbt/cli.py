"""The `pbt` command: argparse, and one small handler per command that parses, calls a stage and
returns its exit code.

Mistakes a user can make surface as `PbtError`: the command prints that one line and exits 2,
with no traceback and nothing written.

The stages load torch and Ray, which takes seconds: each handler imports its stage only after the
config file and overrides are read, so `pbt --help`, `pbt --version` and a mistake in the config
answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pbt.cluster.interrupts import as_interrupted, terminate_raises
from pbt.engines import EXPLOIT_LOGGER
from pbt.errors import PbtError

if TYPE_CHECKING:
    from pbt.config import ExperimentConfig

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
    if args.command is None:
        # Bare `pbt`: the commands it has. Nothing was asked for, so nothing ran: exit 2 on stderr as
        # for any usage error (a script calling `pbt $EMPTY` must fail); `pbt --help` is the success.
        parser.print_help(sys.stderr)
        return EXIT_USAGE
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
    """Print each exploit/explore step of either engine as it happens: `lr 0.02 -> 0.024 (x1.2)`."""
    exploits = logging.getLogger(EXPLOIT_LOGGER)
    if not any(isinstance(h, _StdoutHandler) for h in exploits.handlers):
        exploits.addHandler(_StdoutHandler())
    exploits.setLevel(logging.INFO)
    exploits.propagate = False


class _StdoutHandler(logging.Handler):
    """Writes to whatever `sys.stdout` is at the time, so the lines interleave with pbt's own output."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"  [pbt] {record.getMessage()}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbt", description="Population-based training of PyTorch models on Ray Tune."
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # name, handler, help, description, whether it replaces earlier results on --overwrite
    config_commands = [
        ("lr-find", lr_find_command, "run the LR range test and write lr_range.json, lr_range.png and TensorBoard data",
         "Run the LR range test (Smith) on the configured trainer: one epoch (at least lr_range.min_steps "
         "steps) with an exponentially growing learning rate. Prints the range and writes it to the experiment folder "
         "(replacing an earlier range test there; a folder of another command's results is refused without --overwrite).",
         True),
        ("run", run_command, "the main job: range test, PBT, grid and one-cycle baselines, then the comparison",
         "Run everything in one experiment folder: the LR range test, PBT, the grid search and the one-cycle "
         "run for the same compute, then `pbt compare` on the folder.", True),
        ("pbt", pbt_command, "run population-based training on Ray Tune (after the range test, unless search.lr is given)",
         "Seed a population inside the LR range test's range and train it with Ray Tune's "
         "PopulationBasedTraining; writes lineage.json and prints the best member's schedule.", True),
        ("grid", grid_command, "run the grid-search baseline over the same space and budget as the population",
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
    sweep.set_defaults(handler=sweep_command)
    compare = commands.add_parser(
        "compare",
        help="compare the arms of experiment folders: table, summary.json, plots, TensorBoard runs",
        description="Read the arms (pbt, grid, one_cycle) of each DIR and report accuracy against compute, the "
        "test accuracy of the run chosen by validation, compute to a target accuracy, and PBT's schedule.",
    )
    compare.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders written by `pbt run` (or their URIs, e.g. s3://bucket/results/mnist1d)")
    compare.add_argument("--target", type=float, default=None,
                         help="validation accuracy to time (default: compare.target_val_acc, else the grid's final best)")
    compare.set_defaults(handler=compare_command)
    resume = commands.add_parser(
        "resume",
        help="finish an experiment whose `pbt` process was killed",
        description="Continue the job recorded in DIR (job.json): finished runs are kept, unfinished ones "
        "continue from their last checkpoint (Tuner.restore), arms not yet started run, then the comparison.",
    )
    resume.add_argument("folder", metavar="DIR", help="an experiment folder (or URI) written by `pbt run`, `pbt pbt` or `pbt grid`")
    resume.add_argument("--address", default=None, help="Ray cluster to run on (default: $RAY_ADDRESS, else local)")
    resume.set_defaults(handler=resume_command)
    replay = commands.add_parser(
        "replay",
        help="retrain the best PBT member's schedule from scratch as one run",
        description="Read DIR/lineage.json and train one fresh model through the best member's schedule.",
    )
    replay.add_argument("folder", metavar="DIR", help="an experiment folder (or URI) written by `pbt pbt`")
    replay.set_defaults(handler=replay_command)
    return parser


class _Version(argparse.Action):
    """`--version`: the installed package's version, read from its metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="print pbt's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("pbt")
        except PackageNotFoundError:  # run from a source tree that was never installed
            text = "(not installed)"
        print(f"pbt {text}")
        parser.exit()


def _add_config_arguments(parser: argparse.ArgumentParser, overwrite: bool = False) -> None:
    parser.add_argument("config", help="experiment YAML file, e.g. configs/mnist1d.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override config values, e.g. trainer.optimizer=adam lr_range.seeds=5")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on, HOST:PORT or 'auto' (default: $RAY_ADDRESS, else a fresh local Ray)")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace this command's earlier results, or write into a folder holding another "
                                 "command's (default: refuse)")


def load_checked(args: argparse.Namespace) -> ExperimentConfig:
    """The config with its trainer, storage and cluster checked (`stages.job.checked_config`).

    The file and its overrides are read on their own first: that needs neither torch nor Ray, so a
    mistake there is one line at once, not after the seconds they take to load.
    """
    from pbt.config import load_config

    load_config(args.config, args.overrides)
    from pbt.stages.job import checked_config

    return checked_config(args.config, args.overrides, args.address)


def lr_find_command(args: argparse.Namespace) -> int:
    config = load_checked(args)
    from pbt.range_test.report import run_range_test
    from pbt.reporting.console import upload
    from pbt.storage.checks import RANGE_TEST, check_unmixed

    check_unmixed(config.storage, RANGE_TEST, args.overwrite)
    run_range_test(config)
    upload(config.storage)
    return 0


def run_command(args: argparse.Namespace) -> int:
    config = load_checked(args)
    from pbt.stages.job import start_job

    arms = ("pbt", "grid", "one_cycle") if config.one_cycle.enabled else ("pbt", "grid")
    return start_job(config, arms, args.overwrite)


def pbt_command(args: argparse.Namespace) -> int:
    config = load_checked(args)
    from pbt.stages.job import start_job

    return start_job(config, ("pbt",), args.overwrite)


def grid_command(args: argparse.Namespace) -> int:
    config = load_checked(args)
    from pbt.stages.job import start_job

    return start_job(config, ("grid",), args.overwrite)


def sweep_command(args: argparse.Namespace) -> int:
    widths = _widths(args.widths)
    if args.optimizers:
        args.overrides.append(f"sweep.optimizers=[{args.optimizers}]")
    config = load_checked(args)
    from pbt.stages.sweep import sweep_stage

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


def compare_command(args: argparse.Namespace) -> int:
    from pbt.stages.job import compare_experiments

    return compare_experiments(args.folders, args.target)


def resume_command(args: argparse.Namespace) -> int:
    from pbt.stages.job import resume_job

    return resume_job(args.folder, args.address)


def replay_command(args: argparse.Namespace) -> int:
    from pbt.stages.lineage import replay_experiment

    return replay_experiment(args.folder)


if __name__ == "__main__":
    sys.exit(main())
