"""How far the LR range test's `lr_high` moves with the experiment's seed, for 1, 3 or 5 sweeps.

The schedule's peak comes from the range test, so a range that moves with `seed=` moves every arm.
For each task and each `lr_range.seeds` N, the range test of experiment seeds 0-4 is run as
`pbt lr-find CONFIG seed=S lr_range.seeds=N` runs it (the median curve of the sweeps by seeds
S, ..., S + N - 1, read by the shipped rule, the weight decay chosen as `find_lr_range` chooses
it), and the table says how far apart the five `lr_high` lie (max / min). Experiment seeds 0-4
share sweeps once N > 1 (seed 0 with N = 5 sweeps by seeds 0-4, seed 1 by 1-5), which is what a
user changing `seed=` gets but hides some of the spread; `--stride 5` also runs experiment seeds
0, 5, 10, 15, 20, whose sweeps are all different for N <= 5.

A sweep depends only on the config and its seed, so each is recorded once and shared by every
range test that uses it (`pbt.range_test.finder.seed_curve`, wrapped here); `s/test` is what one
range test at that N costs on this machine (its sweeps' seconds, averaged over the experiments).
`own` is the spread the `Seeds` line of `pbt lr-find` prints (its seeds' own `lr_high`, max / min;
the median over the experiments), `moves` how far that line expects the range to move with the
seed (`pbt.range_test.report.median_spread`; the median over the experiments) and `over` in how
many of the five experiments the line says that is over 2x. Several weight decays run one after the other in
this process (`pbt lr-find` runs them as parallel Ray tasks): the same ranges, no Ray.

Tasks (`--tasks`):
  mnist1d      configs/mnist1d.yaml as shipped
  digits_b32   configs/mnist.yaml on rendered digits, batch 32, weight decay 0 (the `mnist`
               built-in's seed CNN; the held-out image set of issue 29.7)
  mnist        configs/mnist.yaml as shipped (batch 128, three weight decays) on rendered digits
  fashion      configs/fashion_mnist.yaml as shipped (the CNN at width 4) on the same rendered digits

The digits (scripts/calibration_trainers.py:render_digits: 2000 training images, 500 of them for
validation, 500 test) are rendered once into `--out` (~/.cache/pbt/range_spread or $PBT_CACHE_DIR);
vision data cannot be downloaded here, and a small set keeps a sweep at `lr_range.min_steps`
(100 steps) where a real MNIST epoch has 430.

    python scripts/range_spread.py                                    # mnist1d and digits_b32
    python scripts/range_spread.py --tasks mnist1d,digits_b32,mnist --stride 1,5
    python scripts/range_spread.py --constants    # the tables median_spread reads (Monte Carlo)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pbt.config import ExperimentConfig, load_config
from pbt.errors import PbtError
from pbt.range_test import finder
from pbt.range_test.report import SEED_SPREAD_LIMIT, median_spread, seeds_text

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
DIGITS_TRAIN, DIGITS_TEST = 2000, 500


@dataclass(frozen=True)
class Task:
    config: Path
    overrides: tuple[str, ...]
    digits: str = ""  # the rendered digits stand in for this data set's files ("": none needed)


VISION = ("trainer.val_size=500", "resources.gpu=0")
TASKS = {
    "mnist1d": Task(CONFIGS / "mnist1d.yaml", ()),
    "digits_b32": Task(CONFIGS / "mnist.yaml", (*VISION, "trainer.batch_size=32", "lr_range.weight_decays=[0.0]"), "MNIST"),
    "mnist": Task(CONFIGS / "mnist.yaml", VISION, "MNIST"),
    "fashion": Task(CONFIGS / "fashion_mnist.yaml", VISION, "FashionMNIST"),
}


def ensure_digits(out: Path) -> Path:
    """Rendered digits in MNIST's file format, also linked where the `fashion_mnist` built-in reads."""
    root = out / f"digits-{DIGITS_TRAIN}-{DIGITS_TEST}"
    raw = root / "MNIST" / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").is_file():
        sys.path.insert(0, str(HERE))
        from calibration_trainers import render_digits

        render_digits(root, train=DIGITS_TRAIN, test=DIGITS_TEST)
    fashion = root / "FashionMNIST" / "raw"
    fashion.mkdir(parents=True, exist_ok=True)
    for file in raw.iterdir():
        if not (fashion / file.name).exists():
            (fashion / file.name).symlink_to(file)
    return root


class SweepCache:
    """`finder.seed_curve`, each sweep recorded once: the range test of seed 1 with 5 sweeps uses
    four of seed 0's. Keeps how long each sweep took, to say what a range test costs, and keeps
    both in `path` (JSON) so that a second run records only what the first did not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        saved = json.loads(path.read_text()) if path.is_file() else {}
        self.curves = {key: finder.Curve(**found["curve"]) for key, found in saved.items()}
        self.seconds = {key: found["seconds"] for key, found in saved.items()}
        self.recorded = 0  # by this run
        self.record = finder.seed_curve
        self.used: set[str] = set()  # the sweeps of the range test under way

    def __call__(self, config: ExperimentConfig, weight_decay: float, steps: int | None, seed: int,
                 on_step: finder.StepCallback | None = None) -> finder.Curve:
        # The sweep depends on the whole config but its seed, its sweep count and its name.
        settings = config.model_dump(mode="json", exclude={"seed": True, "name": True, "lr_range": {"seeds"}})
        key = json.dumps([settings, weight_decay, steps, seed], sort_keys=True)
        if key not in self.curves:
            started = time.perf_counter()
            self.curves[key] = self.record(config, weight_decay, steps, seed, on_step)
            self.seconds[key] = time.perf_counter() - started
            self.recorded += 1
            self.save()
        self.used.add(key)
        return copy.deepcopy(self.curves[key])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = {key: {"curve": asdict(curve), "seconds": self.seconds[key]} for key, curve in self.curves.items()}
        self.path.write_text(json.dumps(saved))

    def begin(self) -> None:
        self.used = set()

    def cost(self) -> float:
        return sum(self.seconds[key] for key in self.used)


def range_test(config: ExperimentConfig) -> finder.RangeTest:
    """`find_lr_range`, its weight decays one after the other in this process."""
    found, failures = [], {}
    for decay in config.lr_range.weight_decays:
        try:
            found.append(finder.range_for_weight_decay(config, decay))
        except PbtError as err:
            failures[str(decay)] = str(err)
    if not found:
        raise PbtError(next(iter(failures.values())))
    return finder.RangeTest(found, finder.choose_weight_decay(found), failures)


def measure(name: str, task: Task, counts: list[int], experiments: list[int], cache: SweepCache,
            digits: Path | None) -> list[dict]:
    rows = []
    overrides = list(task.overrides) + ([f"trainer.data_dir={digits}"] if task.digits else [])
    for count in counts:
        highs, owns, moves, flagged, costs = [], [], [], 0, []
        for seed in experiments:
            config = load_config(task.config, [*overrides, f"seed={seed}", f"lr_range.seeds={count}"])
            cache.begin()
            chosen = range_test(config).chosen
            costs.append(cache.cost())
            highs.append(chosen.lr_high)
            own = chosen.own_highs()
            if count > 1 and len(own) > 1:
                owns.append(max(own.values()) / min(own.values()))
            if count > 2 and len(own) > 2:
                moves.append(median_spread(owns[-1], len(own), count))
            flagged += f"over {SEED_SPREAD_LIMIT:g}x" in (seeds_text(chosen) or "")
        rows.append({"task": name, "seeds": count, "experiments": experiments, "lr_high": highs,
                     "spread": max(highs) / min(highs), "own": statistics.median(owns) if owns else math.nan,
                     "moves": statistics.median(moves) if moves else math.nan, "over": flagged if count > 1 else "-",
                     "seconds": statistics.mean(costs)})
        print_row(rows[-1], flush=True)
    return rows


def print_header() -> None:
    print(f"{'config':<11} {'seeds':>5}  {'experiment seeds':<17} {'lr_high per experiment seed':<44} "
          f"{'max/min':>7} {'own':>5} {'moves':>5} {'over':>4} {'s/test':>7}")


def print_row(row: dict, flush: bool = False) -> None:
    seeds = ",".join(str(s) for s in row["experiments"])
    highs = " ".join(f"{h:.4f}" for h in row["lr_high"])
    own, moves = (f"{row[key]:.1f}x" if math.isfinite(row[key]) else "-" for key in ("own", "moves"))
    print(f"{row['task']:<11} {row['seeds']:>5}  {seeds:<17} {highs:<44} {row['spread']:>6.2f}x {own:>5} {moves:>5} "
          f"{row['over']:>4} {row['seconds']:>7.1f}", flush=flush)


def constants(draws: int = 200_000) -> None:
    """`OWN_RANGE` and `MEDIAN_RANGE` of `pbt.range_test.report`: for n normal seeds (sd 1), the
    expected max - min of n, and of the median of n over 5 experiments."""
    import numpy as np

    rng = np.random.default_rng(0)
    own, median = {}, {}
    for n in range(1, 17):
        x = rng.standard_normal((draws, 5, n))
        own[n] = round(float((x[:, 0].max(1) - x[:, 0].min(1)).mean()), 2)
        medians = np.median(x, 2)
        median[n] = round(float((medians.max(1) - medians.min(1)).mean()), 2)
    print(f"OWN_RANGE = {own}\nMEDIAN_RANGE = {median}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist1d,digits_b32", help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--counts", default="1,3,5", help="the lr_range.seeds to try")
    parser.add_argument("--stride", default="1", help="experiment seeds 0, k, ..., 4k per stride k (5: no shared sweeps)")
    cache = Path(os.environ.get("PBT_CACHE_DIR") or Path.home() / ".cache" / "pbt").expanduser() / "range_spread"
    parser.add_argument("--out", type=Path, default=cache,
                        help="where the rendered digits and the recorded sweeps (sweeps.json) go")
    parser.add_argument("--constants", action="store_true", help="print the tables of median_spread (Monte Carlo)")
    args = parser.parse_args()
    if args.constants:
        constants()
        return 0
    tasks = args.tasks.split(",")
    unknown = [name for name in tasks if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    counts = [int(n) for n in args.counts.split(",")]
    strides = [int(k) for k in args.stride.split(",")]
    digits = ensure_digits(args.out) if any(TASKS[name].digits for name in tasks) else None
    cache = SweepCache(args.out / "sweeps.json")
    finder.seed_curve = cache  # range_for_weight_decay looks it up at each call
    started, cpu = time.perf_counter(), time.process_time()
    print_header()
    for name in tasks:
        for stride in strides:
            measure(name, TASKS[name], counts, [stride * i for i in range(5)], cache, digits)
    print(f"\n{cache.recorded} sweeps recorded (the others read from {cache.path}) in "
          f"{time.perf_counter() - started:.0f} s, {time.process_time() - cpu:.0f} s of CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
