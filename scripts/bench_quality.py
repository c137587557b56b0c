"""Was PBT worth it? PBT, grid search and one-cycle at equal budget, over several seeds.

For each seed this runs the main job (`pbt run configs/mnist1d.yaml seed=S`, or another task's
config) and reads its `summary.json`. It reports, per arm, the test accuracy of the run chosen by
validation accuracy (median, and mean, sd and range over the seeds); per seed, the paired
differences PBT - grid and PBT - one-cycle (in points), with their mean, standard error and the
seeds PBT was ahead; and the compute PBT needed to reach the grid's best validation accuracy, as a
share of the grid's compute. Targets: PBT's median test accuracy >= the grid's + 0.5 points; PBT
ahead of every other arm by at least 0.3 points (paired mean); PBT reaches the grid's final best
validation accuracy with <= 50% of the grid's compute.

Tasks (`--task`): mnist1d (configs/mnist1d.yaml, the default) and font_digits (the calibration
suite's font-rendered digits, rendered once into ~/.cache/pbt or $PBT_CACHE_DIR, under the `mnist`
built-in: configs/font_digits.yaml). `--config PATH` runs another config in place of the task's.

    python scripts/bench_quality.py                 # 3 seeds of MNIST-1D, about 2 minutes each on 2 cores
    python scripts/bench_quality.py --seeds 0 1 population.perturbation_interval=2
    python scripts/bench_quality.py --seeds 0 1 2 3 4 population.pack=1   # the actor engine
    python scripts/bench_quality.py --task font_digits --seeds 0 1 2 3 4 --out digits.json   # about 5 minutes a seed
    python scripts/bench_quality.py --rows digits.json more_digits.json  # the report of stored rows, running nothing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbt.cli import main as pbt_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ARM_TITLES = {"pbt": "PBT", "grid": "grid", "one_cycle": "one-cycle"}
AHEAD_TARGET = 0.3  # points: PBT's paired mean margin over every other arm
DIGITS_TRAIN, DIGITS_TEST = 4000, 1000  # rendered images; configs/font_digits.yaml holds 1000 of the 4000 for validation


@dataclass(frozen=True)
class Task:
    """A job to benchmark: its config, the overrides every seed runs with, and its data."""

    title: str
    config: Path
    overrides: tuple[str, ...] = ()
    digits: bool = False  # runs on the rendered digits: their folder goes to trainer.data_dir


TASKS = {
    "mnist1d": Task("MNIST-1D", CONFIGS / "mnist1d.yaml"),
    "font_digits": Task("font-rendered digits, the mnist built-in's seed CNN", CONFIGS / "font_digits.yaml", digits=True),
}


def digits_folder() -> Path:
    """Where the rendered digits are cached: beside MNIST-1D's generated data (trainables/mnist1d.py)."""
    cache = Path(os.environ.get("PBT_CACHE_DIR") or Path.home() / ".cache" / "pbt").expanduser()
    return cache / f"font_digits-{DIGITS_TRAIN}-{DIGITS_TEST}"


def task_arguments(task: Task, config: Path | None = None) -> tuple[Path, list[str]]:
    """The config (`config` in place of the task's own) and the overrides a task's seeds run with."""
    overrides = list(task.overrides)
    if task.digits:
        overrides.append(f"trainer.data_dir={digits_folder()}")
    return config or task.config, overrides


def ensure_digits(folder: Path) -> None:
    """Render the calibration suite's digits into `folder` unless they are there: into a fresh folder
    first, renamed when whole, so that an interrupted rendering is never read."""
    if (folder / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        return
    sys.path.insert(0, str(REPO / "scripts"))
    from calibration_trainers import render_digits

    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=folder.parent))
    started = time.perf_counter()
    render_digits(fresh, train=DIGITS_TRAIN, test=DIGITS_TEST)
    fresh.rename(folder)
    print(f"rendered {DIGITS_TRAIN} + {DIGITS_TEST} digits into {folder} in {time.perf_counter() - started:.0f} s", flush=True)


def run_seed(seed: int, config: Path, storage: Path, overrides: list[str], log: Path) -> dict:
    args = ["run", str(config), f"seed={seed}", f"name=seed{seed}", f"storage_path={storage}", *overrides]
    with log.open("w") as stream, contextlib.redirect_stdout(stream):
        code = pbt_main(args)
    if code != 0:
        raise SystemExit(f"pbt run failed for seed {seed} (exit {code}); see {log}")
    return json.loads((storage / f"seed{seed}" / "summary.json").read_text())


def seed_row(seed: int, summary: dict, minutes: float) -> dict[str, Any]:
    """One seed's numbers: each arm's chosen run (test, val, epochs) and PBT's share of the grid's compute."""
    arms = summary["arms"]
    share = summary.get("share_of_grid_compute_to_target", {}).get("pbt")
    return {"seed": seed, "share": share["epochs"] if share else None, "grid_best_val": summary["target_val_acc"],
            **{name: arm["chosen"]["test_acc"] for name, arm in arms.items()},
            **{f"{name}_val": arm["chosen"]["val_acc"] for name, arm in arms.items()},
            **{f"{name}_epochs": arm["epochs"] for name, arm in arms.items()},
            "minutes": minutes}


def arms_of(rows: list[dict[str, Any]]) -> list[str]:
    """The arms every row has, in the comparison's order."""
    return [name for name in ARM_TITLES if all(row.get(name) is not None for row in rows)]


def difference(row: dict[str, Any], arm: str) -> float | None:
    """PBT - `arm` in points for one seed; None where the seed lacks either."""
    if row.get("pbt") is None or row.get(arm) is None:
        return None
    return round((row["pbt"] - row[arm]) * 100, 6)  # rounded: 0.941 - 0.939 is not 0.2 in floating point


def paired_difference(rows: list[dict[str, Any]], arm: str) -> dict[str, Any] | None:
    """PBT - `arm` over the seeds that have both: mean and standard error (sd / sqrt(n); None for one
    seed) in points, and the seeds PBT was ahead. None when no seed has both."""
    differences = [d for row in rows if (d := difference(row, arm)) is not None]
    if not differences:
        return None
    error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else None
    return {"arm": arm, "seeds": len(differences), "mean": statistics.mean(differences), "se": error,
            "ahead": sum(d > 0 for d in differences)}


def print_seed(row: dict[str, Any], arms: list[str]) -> None:
    share = f"{row['share']:.0%} of the grid's epochs" if row["share"] is not None else "- never"
    gaps = [f"PBT - {ARM_TITLES[arm]} {d:+.2f}" for arm in arms if arm != "pbt" and (d := difference(row, arm)) is not None]
    print(f"seed {row['seed']} ({row['minutes']:.1f} min): test acc of the val-chosen run: "
          + "  ".join(f"{name} {row[name]:.4f} (val {row[name + '_val']:.4f}, {row[name + '_epochs']} epochs)" for name in arms)
          + f"  | grid's best val {row['grid_best_val']:.4f}; PBT reached it with {share}"
          + (f"  | {', '.join(gaps)} points" if gaps else ""), flush=True)


def print_arms(rows: list[dict[str, Any]], arms: list[str]) -> None:
    """Each arm's median, mean, sd and range over the seeds, and the minutes a seed took."""
    print(f"\nmedian test accuracy over {len(rows)} seeds: "
          + "  ".join(f"{name} {statistics.median(r[name] for r in rows):.4f}" for name in arms))
    for name in arms:
        values = [r[name] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {name:9s} mean {statistics.mean(values):.4f}  sd {spread:.4f}  min {min(values):.4f}  max {max(values):.4f}")
    minutes = [r["minutes"] for r in rows]
    print(f"minutes per seed: mean {statistics.mean(minutes):.1f} (min {min(minutes):.1f}, max {max(minutes):.1f})")


def paired_text(paired: dict[str, Any]) -> str:
    error = f"{paired['se']:.2f}" if paired["se"] is not None else "-"
    return f"{paired['mean']:+.2f} (se {error})"


def share_median(rows: list[dict[str, Any]]) -> float:
    """PBT's median share of the grid's compute to reach the grid's best (a seed that never did: infinite)."""
    return statistics.median(r["share"] if r["share"] is not None else math.inf for r in rows)


def share_text(share: float | None) -> str:
    return "never" if share is None or math.isinf(share) else f"{share:.0%}"


def paired_table(rows: list[dict[str, Any]], arms: list[str]) -> list[str]:
    """A Markdown table for BENCHMARKS.md: per seed each arm's test accuracy, PBT's paired differences
    and its share of the grid's compute; then the means (standard errors) and the seeds PBT was ahead."""
    others = [arm for arm in arms if arm != "pbt"]
    head = ["seed", *(ARM_TITLES[a] for a in arms), *(f"PBT - {ARM_TITLES[a]}" for a in others), "PBT to the grid's best"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        cells = [str(row["seed"]), *(f"{row[a]:.4f}" for a in arms), *(f"{difference(row, a):+.2f}" for a in others),
                 share_text(row["share"])]
        lines.append("| " + " | ".join(cells) + " |")
    paired = [paired_difference(rows, a) for a in others]
    means = [f"{statistics.mean(r[a] for r in rows):.4f}" for a in arms]
    summary = [*means, *(paired_text(p) for p in paired), f"median {share_text(share_median(rows))}"]
    lines.append("| mean (se) | " + " | ".join(summary) + " |")
    ahead = [f"{p['ahead']} of {p['seeds']}" for p in paired]
    lines.append("| PBT ahead | " + " | ".join([*("" for _ in arms), *ahead, ""]) + " |")
    return lines


def ahead_target_line(rows: list[dict[str, Any]], arms: list[str]) -> str:
    """The issue's target: PBT ahead of every other arm by at least 0.3 points (paired mean), and by how much."""
    paired = [p for arm in arms if arm != "pbt" and (p := paired_difference(rows, arm)) is not None]
    name = f"PBT ahead of every other arm by at least {AHEAD_TARGET} points (paired mean)"
    if not paired:
        return f"{name}: no other arm to compare"
    margins = ", ".join(f"PBT - {ARM_TITLES[p['arm']]} {p['mean']:+.2f}" for p in paired)
    closest = min(paired, key=lambda p: p["mean"])
    slack = closest["mean"] - AHEAD_TARGET
    verdict = f"met, {slack:.2f} to spare" if slack >= 0 else f"NOT met, {ARM_TITLES[closest['arm']]} {-slack:.2f} short"
    return f"{name}: {verdict} ({margins})"


def print_report(rows: list[dict[str, Any]]) -> None:
    arms = arms_of(rows)
    print_arms(rows, arms)
    print("\n" + "\n".join(paired_table(rows, arms)) + "\n")
    if "grid" in arms:
        gain = round((statistics.median(r["pbt"] for r in rows) - statistics.median(r["grid"] for r in rows)) * 100, 2)
        print(f"PBT - grid: {gain:+.2f} points (target >= +0.5: {'met' if gain >= 0.5 else 'NOT met'})")
    print(ahead_target_line(rows, arms))
    share = share_median(rows)
    print(f"PBT's compute to reach the grid's best validation accuracy, share of the grid's: median "
          f"{share_text(share)} (target <= 50%: {'met' if share <= 0.5 else 'NOT met'})")


def write_rows(path: Path, rows: list[dict[str, Any]], task: str, config: Path, overrides: list[str]) -> None:
    """The per-seed rows as JSON, rewritten after every seed (`--rows` reads and recombines them)."""
    path.write_text(json.dumps({"task": task, "config": str(config), "overrides": overrides, "rows": rows}, indent=1))


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    return [row for path in paths for row in json.loads(path.read_text())["rows"]]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--task", choices=TASKS, default="mnist1d", help="the job to benchmark (default: mnist1d)")
    parser.add_argument("--config", type=Path, default=None,
                        help="run this config in place of the task's (default: configs/mnist1d.yaml, the mnist1d task's)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the experiment folders here")
    parser.add_argument("--out", type=Path, default=None, help="write the per-seed rows to this JSON file")
    parser.add_argument("--rows", type=Path, nargs="+", default=None, help="report the rows of these --out files; run nothing")
    parser.add_argument("overrides", nargs="*", help="config overrides for every seed, e.g. population.size=8")
    # KEY=VALUE words are overrides wherever they stand: after `--seeds 0 1 2` argparse would take them for seeds.
    overrides = [word for word in sys.argv[1:] if "=" in word and not word.startswith("-")]
    args = parser.parse_args([word for word in sys.argv[1:] if word not in overrides])
    args.overrides += overrides
    return args


def main() -> None:
    args = parse_arguments()
    if args.rows:
        print_report(read_rows(args.rows))
        return
    task = TASKS[args.task]
    config, overrides = task_arguments(task, args.config)
    if task.digits:
        ensure_digits(digits_folder())
    overrides += args.overrides
    storage = args.keep or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    storage.mkdir(parents=True, exist_ok=True)
    title = task.title if args.config is None else f"{args.config} ({args.task} task)"
    print(f"{title}, {config.name}{' + ' + ' '.join(args.overrides) if args.overrides else ''}; "
          f"seeds {args.seeds}; folders in {storage}", flush=True)
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        summary = run_seed(seed, config, storage, overrides, storage / f"seed{seed}.log")
        rows.append(seed_row(seed, summary, (time.perf_counter() - started) / 60))
        print_seed(rows[-1], arms_of(rows[-1:]))
        if args.out:
            write_rows(args.out, rows, args.task, config, overrides)
    print_report(rows)


if __name__ == "__main__":
    main()
