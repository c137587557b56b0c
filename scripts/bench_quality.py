"""Was PBT worth it on MNIST-1D? PBT, grid search and one-cycle at equal budget, over several seeds.

For each seed this runs the main job (`pbt run configs/mnist1d.yaml seed=S`) and reads its
`summary.json`. It reports, per arm, the test accuracy of the run chosen by validation accuracy
(median, and mean, sd and range over the seeds), and the compute PBT needed to reach the grid's best validation accuracy, as a share of
the grid's compute. Targets: PBT's median test accuracy >= the grid's + 0.5 points, and PBT
reaches the grid's final best validation accuracy with <= 50% of the grid's compute.

    python scripts/bench_quality.py                 # 3 seeds, about 6 minutes each on 2 cores
    python scripts/bench_quality.py --seeds 0 1 population.perturbation_interval=2
    python scripts/bench_quality.py --seeds 0 1 2 3 4 population.pack=1   # the actor engine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pbt.cli import main as pbt_main

REPO = Path(__file__).resolve().parents[1]


def run_seed(seed: int, storage: Path, overrides: list[str], log: Path) -> dict:
    args = ["run", str(REPO / "configs" / "mnist1d.yaml"), f"seed={seed}", f"name=seed{seed}",
            f"storage_path={storage}", *overrides]
    with log.open("w") as stream, contextlib.redirect_stdout(stream):
        code = pbt_main(args)
    if code != 0:
        raise SystemExit(f"pbt run failed for seed {seed} (exit {code}); see {log}")
    return json.loads((storage / f"seed{seed}" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, default=None, help="keep the experiment folders here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every seed, e.g. population.size=8")
    # KEY=VALUE words are overrides wherever they stand: after `--seeds 0 1 2` argparse would take them for seeds.
    overrides = [word for word in sys.argv[1:] if "=" in word and not word.startswith("-")]
    args = parser.parse_args([word for word in sys.argv[1:] if word not in overrides])
    args.overrides += overrides
    storage = args.keep or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    storage.mkdir(parents=True, exist_ok=True)
    print(f"MNIST-1D, default config{' + ' + ' '.join(args.overrides) if args.overrides else ''}; "
          f"seeds {args.seeds}; folders in {storage}", flush=True)
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        summary = run_seed(seed, storage, args.overrides, storage / f"seed{seed}.log")
        arms = summary["arms"]
        share = summary.get("share_of_grid_compute_to_target", {}).get("pbt")
        row = {"seed": seed, "share": share["epochs"] if share else None, "grid_best_val": summary["target_val_acc"],
               **{name: arm["chosen"]["test_acc"] for name, arm in arms.items()},
               **{f"{name}_val": arm["chosen"]["val_acc"] for name, arm in arms.items()},
               **{f"{name}_epochs": arm["epochs"] for name, arm in arms.items()}}
        row["minutes"] = (time.perf_counter() - started) / 60
        rows.append(row)
        print(f"seed {seed} ({row['minutes']:.1f} min): test acc of the val-chosen run: "
              + "  ".join(f"{name} {row[name]:.4f} (val {row[name + '_val']:.4f}, {row[name + '_epochs']} epochs)"
                          for name in arms)
              + f"  | grid's best val {row['grid_best_val']:.4f}; PBT reached it with "
              + (f"{row['share']:.0%} of the grid's epochs" if row["share"] is not None else "- never"), flush=True)
    median = {name: statistics.median(r[name] for r in rows) for name in ("pbt", "grid", "one_cycle") if name in rows[0]}
    shares = [r["share"] if r["share"] is not None else float("inf") for r in rows]
    gain = round((median["pbt"] - median["grid"]) * 100, 2)  # accuracies are multiples of 1/1000
    print(f"\nmedian test accuracy over {len(rows)} seeds: "
          + "  ".join(f"{name} {value:.4f}" for name, value in median.items()))
    for name in median:
        values = [r[name] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {name:9s} mean {statistics.mean(values):.4f}  sd {spread:.4f}  min {min(values):.4f}  max {max(values):.4f}")
    print(f"minutes per seed: mean {statistics.mean(r['minutes'] for r in rows):.1f} "
          f"(min {min(r['minutes'] for r in rows):.1f}, max {max(r['minutes'] for r in rows):.1f})")
    print(f"PBT - grid: {gain:+.2f} points (target >= +0.5: {'met' if gain >= 0.5 else 'NOT met'})")
    print(f"PBT's compute to reach the grid's best validation accuracy, share of the grid's: median "
          f"{statistics.median(shares):.0%} (target <= 50%: {'met' if statistics.median(shares) <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
