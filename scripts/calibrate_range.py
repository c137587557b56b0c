"""Calibrate the LR range test's reading rule against brute force, over several model families.

For each family and batch size it runs `pbt sweep` (every optimizer at `--rates` fixed learning
rates, each until the family's target accuracy, in packs where the trainer can be packed) and
keeps its `sweep.json`: per optimizer the band of rates that reach the target, the fastest rate,
and the range test's median curve. Then, per cell (family x batch size x optimizer), it reads the
curve with the rule of `pbt.range_test.finder` and says whether the range lies inside the band
and whether the suggestion is within 2x of the fastest rate; `--fit` also searches the rules of
the same shape (divergence point, minimum or their geometric mean; two divisors; a shift per
optimizer, never per model) for the one that scores best over the whole suite.

    python scripts/calibrate_range.py --out calibration            # run what is missing, then report
    python scripts/calibrate_range.py --out calibration --fit      # and search the rules
    python scripts/calibrate_range.py --out calibration --report-only --families mnist1d_cnn
    python scripts/calibrate_range.py --out calibration --replicate 1 --families mnist1d_cnn,mnist1d_mlp
    python scripts/calibrate_range.py --out calibration --report-only --fit --target-epochs 0.33

A cell whose sweep finished is not run again; delete its folder to rerun it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pbt.config import LRRangeConfig
from pbt.range_test.finder import RANGE_SHIFT, read_curve, read_range
from pbt.stages.sweep_runs import band, run_outcome

HERE = Path(__file__).resolve().parent
TRAINERS = HERE / "calibration_trainers.py"
MNIST1D = {"num_samples": 4000}


@dataclass(frozen=True)
class Family:
    """A model family: its trainer, settings, the accuracy its runs must reach, and in how many epochs."""

    trainable: str
    trainer: dict[str, Any]
    target: float
    max_epochs: int


FAMILIES = {
    "mnist1d_cnn": Family("mnist1d", MNIST1D, 0.85, 30),
    "mnist1d_mlp": Family(f"{TRAINERS}:MNIST1DMLPTrainer", MNIST1D, 0.5, 30),
    "mnist1d_batchnorm": Family(f"{TRAINERS}:MNIST1DBatchNormTrainer", MNIST1D, 0.85, 30),
    "mnist1d_dataloader": Family(f"{TRAINERS}:LoaderTrainer", {"num_samples": 3000}, 0.8, 20),
    "digits_seed_cnn": Family("mnist", {"val_size": 500, "eval_batch_size": 1000}, 0.8, 10),
}
BATCH_SIZES = (32, 128)
OPTIMIZERS = ("sgd", "sgd+momentum", "adam", "adagrad", "adadelta", "rmsprop")


def experiment_name(name: str, batch: int, seed: int) -> str:
    """The sweep's folder under `results/`: seed 0 keeps the name the first sweeps were stored under."""
    return f"{name}_b{batch}" if seed == 0 else f"{name}_b{batch}_s{seed}"


def run_cell_group(out: Path, name: str, family: Family, batch: int, rates: int, seed: int = 0) -> Path:
    """`pbt sweep` of every optimizer for one family and batch size; returns its `sweep.json`."""
    experiment = experiment_name(name, batch, seed)
    summary = out / "results" / experiment / "sweep.json"
    if summary.is_file():
        return summary
    trainer = dict(family.trainer, batch_size=batch)
    if family.trainable == "mnist":
        trainer["data_dir"] = str(ensure_digits(out))
    config = out / f"{experiment}.yaml"
    config.write_text(yaml.safe_dump({
        "name": experiment, "seed": seed, "trainable": family.trainable, "trainer": trainer, "storage_path": str(out / "results"),
        "lr_range": {"seeds": 3},
        "sweep": {"rates": rates, "lr_min": 1e-5, "lr_max": 100.0, "target": family.target,
                  "max_epochs": family.max_epochs, "max_seconds": 1e6, "optimizers": list(OPTIMIZERS)},
    }))
    started = time.perf_counter()
    print(f"[{experiment}] pbt sweep ...", flush=True)
    log = out / f"{experiment}.log"
    with log.open("w") as stream:
        done = subprocess.run([sys.executable, "-m", "pbt", "sweep", str(config), "--overwrite"], stdout=stream,
                              stderr=subprocess.STDOUT, cwd=out)
    if done.returncode != 0:
        raise SystemExit(f"[{experiment}] pbt sweep failed ({done.returncode}); see {log}")
    print(f"[{experiment}] done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return summary


def ensure_digits(out: Path) -> Path:
    """Rendered digits in MNIST's format: 2000 training images (500 of them validation), 500 test."""
    root = out / "digits"
    if not (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        sys.path.insert(0, str(HERE))
        from calibration_trainers import render_digits

        render_digits(root, train=2000, test=500)
    return root


def load_cells(summary: Path, family: str, batch: int) -> list[dict[str, Any]]:
    """One cell per optimizer of a finished sweep: its band, fastest rate and range test curve."""
    found = json.loads(summary.read_text())
    cells = []
    for optimizer, entry in found["widths"][0]["optimizers"].items():
        band, test = entry["band"], entry["range_test"]
        diverged = [run["lr"] for run in entry["runs"] if run["status"] == "diverged"]
        cells.append({"family": family, "batch": batch, "optimizer": optimizer, "band": band,
                      "fastest": band["fastest"]["lr"] if band["fastest"] else None, "test": test,
                      "lowest_diverged": min(diverged, default=None)})
    return cells


def retargeted(cells: list[dict[str, Any]], summary: Path, family: Family, fraction: float) -> list[dict[str, Any]]:
    """The same cells with every band re-derived, from the runs' stored reports, at a lower target:
    the best validation accuracy any run of the sweep had after `fraction` of its epoch limit
    (never above the family's own target). A target near what the best rate reaches in the whole
    budget leaves a band of one or two rates; the issue's own example set its target where the
    fastest rate needed about a third of the budget (7 of 20 epochs)."""
    records: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for line in (summary.parent / "sweep" / "reports.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault((record["label"].split(" ")[1], record["lr"]), []).append(record)
    epoch = max(1, round(family.max_epochs * fraction))
    reached = [r["val_acc"] for runs in records.values() for r in runs if r["epoch"] == epoch and r.get("val_acc") is not None]
    target = min(family.target, max(reached)) if reached else family.target
    found = []
    for cell in cells:
        runs = [dict(run_outcome(mine, "val_acc", target), lr=lr) for (name, lr), mine in records.items() if name == cell["optimizer"]]
        lowered = band(runs)
        found.append({**cell, "band": lowered, "fastest": lowered["fastest"]["lr"] if lowered["fastest"] else None, "target": target})
    return found


# ---- reading a cell with a rule -------------------------------------------------------------

# The feature the range is read off: the divergence point, the minimum, the steepest fall,
# divergence^w x minimum^(1 - w) in between, where the loss has made a quarter or half of its fall
# (Smith's "where the loss starts to fall"), or divergence^0.25 x that quarter point. Searching
# the last three too shows how a richer rule fares on the family it was not fitted on (`held_out`).
BASES = ("divergence", "minimum", "steepest", "div0.75", "div0.5", "div0.25", "fall0.25", "fall0.5", "div0.25_fall0.25")


def features(cell: dict[str, Any]) -> dict[str, float] | None:
    """The features today's `read_curve` reads off the cell's stored median curve (None: no curve)."""
    test = cell["test"]
    if "lrs" not in test:
        return None
    reading = read_curve(test["lrs"], test["losses"])
    found = {"divergence": reading.divergence_lr, "minimum": reading.min_loss_lr, "steepest": reading.steepest_lr,
             "reading": reading}
    for weight in (0.75, 0.5, 0.25):  # 0.75 is `reading_basis`
        found[f"div{weight}"] = reading.divergence_lr**weight * reading.min_loss_lr ** (1 - weight)
    for share in (0.25, 0.5):
        found[f"fall{share}"] = fallen_to(np.asarray(test["lrs"]), reading.smoothed, share)
    found["div0.25_fall0.25"] = reading.divergence_lr**0.25 * found["fall0.25"] ** 0.75
    return found


def fallen_to(lrs: np.ndarray, smoothed: np.ndarray, share: float) -> float:
    """The first rate at which the smoothed loss has made `share` of its fall to its lowest point."""
    start = float(np.median(smoothed[: max(1, len(smoothed) // 10)]))
    lowest = int(np.argmin(smoothed))
    level = start - share * (start - smoothed[lowest])
    return float(lrs[int(np.argmax(smoothed[: lowest + 1] <= level))])


def shipped_range(cell: dict[str, Any], read: dict[str, Any]) -> tuple[float, float, float]:
    """The range pbt's code gives today: `training_range` with the default divisors and `RANGE_SHIFT`
    (its keys are the sweep's optimizer names: `sgd` holds momentum 0 in its range test)."""
    return read_range(read["reading"], LRRangeConfig(), cell["optimizer"])[:3]


def score(cell: dict[str, Any], low: float, high: float, suggestion: float) -> tuple[bool, bool]:
    """(range inside the band, suggestion within 2x of the fastest rate)."""
    band = cell["band"]
    inside = band["low"] is not None and band["low"] <= low * 1.0001 and high <= band["high"] * 1.0001
    near = cell["fastest"] is not None and 0.5 <= suggestion / cell["fastest"] <= 2.0
    return inside, near


def table(cells: list[dict[str, Any]], ranges: list[tuple[float, float, float] | None], title: str) -> tuple[int, int, int]:
    print(f"\n{title}\n")
    print("| family | batch | optimizer | range | suggestion | band (rates reaching target) | fastest | inside | within 2x |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    inside_count = near_count = scored = 0
    for cell, found in zip(cells, ranges):
        band = cell["band"]
        band_text = f"[{band['low']:.3g}, {band['high']:.3g}] ({band['reached']})" if band["low"] is not None else "none reached"
        fastest = f"{cell['fastest']:.3g}" if cell["fastest"] else "-"
        if found is None:
            print(f"| {cell['family']} | {cell['batch']} | {cell['optimizer']} | no range: {cell['test'].get('error', '?')[:60]} "
                  f"| - | {band_text} | {fastest} | - | - |")
            continue
        low, high, suggestion = found
        inside, near = score(cell, low, high, suggestion)
        if band["low"] is not None:
            scored += 1
            inside_count += inside
            near_count += near
        print(f"| {cell['family']} | {cell['batch']} | {cell['optimizer']} | [{low:.3g}, {high:.3g}] | {suggestion:.3g} "
              f"| {band_text} | {fastest} | {'yes' if inside else 'no'} | {'yes' if near else 'no'} |")
    narrow = sum(1 for cell in cells if cell["band"]["low"] is not None and cell["band"]["high"] / cell["band"]["low"] < 2.0)
    print(f"\n{title}: range inside the band in {inside_count}/{scored} cells ({inside_count / max(scored, 1):.0%}), "
          f"suggestion within 2x of the fastest in {near_count}/{scored} ({near_count / max(scored, 1):.0%}); "
          f"{narrow} of the {scored} bands are narrower than 2x, so no range of width 2 fits inside them")
    return inside_count, near_count, scored


def fit(cells: list[dict[str, Any]], reads: list[dict[str, Any] | None], bases: tuple[str, ...] = BASES) -> dict[str, Any]:
    """The rule of the shipped shape that scores best over the scored cells: for one basis (a
    feature of the curve) and one width, per optimizer the position of the range's top relative
    to the basis (the same for every family and batch size). Score: cells whose range lies inside
    the band, plus half the cells whose suggestion is within 2x of the fastest rate; ties go to the
    position nearest today's."""
    scored = [(cell, read) for cell, read in zip(cells, reads) if read is not None and cell["band"]["low"] is not None]
    positions = np.geomspace(1e-3, 10, 81)
    best: dict[str, Any] | None = None
    for basis, width in itertools.product(bases, (2.0, 2.5, 3.0)):
        total, chosen = 0.0, {}
        for optimizer in OPTIMIZERS:
            mine = [(cell, read[basis]) for cell, read in scored if cell["optimizer"] == optimizer]
            if not mine:
                continue
            today = RANGE_SHIFT.get(optimizer, 1.0) / LRRangeConfig().high_divisor
            options = []
            for position in positions:
                points = 0.0
                for cell, value in mine:
                    high = value * position
                    inside, near = score(cell, high / width, high, high / math.sqrt(width))
                    points += inside + 0.5 * near
                options.append((points, -abs(math.log(position / today)), float(position)))
            points, _, position = max(options)
            total += points
            chosen[optimizer] = position
        if best is None or total > best["score"]:
            best = {"score": total, "basis": basis, "width": width, "top_over_basis": chosen}
    return best or {}


def rule_range(cell: dict[str, Any], read: dict[str, Any], rule: dict[str, Any]) -> tuple[float, float, float]:
    high = read[rule["basis"]] * rule["top_over_basis"].get(cell["optimizer"], 1 / 20)
    return high / rule["width"], high, high / math.sqrt(rule["width"])


def held_out(cells: list[dict[str, Any]], reads: list[dict[str, Any] | None], bases: tuple[str, ...] = BASES) -> tuple[int, int, int]:
    """Each family read with the rule fitted on the other families: how the rule may fare on a model it never saw."""
    inside = near = scored = 0
    for family in sorted({cell["family"] for cell in cells}):
        others = [(c, r) for c, r in zip(cells, reads) if c["family"] != family]
        rule = fit([c for c, _ in others], [r for _, r in others], bases)
        for cell, read in zip(cells, reads):
            if cell["family"] == family and read is not None and cell["band"]["low"] is not None:
                found = score(cell, *rule_range(cell, read, rule))
                inside, near, scored = inside + found[0], near + found[1], scored + 1
    return inside, near, scored


def ceiling_ratio(cells: list[dict[str, Any]], reads: list[dict[str, Any] | None]) -> list[float]:
    """Per scored cell: the band's top over the divergence point (what a ceiling must stay under)."""
    return sorted(cell["band"]["high"] / read["divergence"] for cell, read in zip(cells, reads)
                  if read is not None and cell["band"]["low"] is not None)


def print_ceiling(cells: list[dict[str, Any]], reads: list[dict[str, Any] | None]) -> None:
    """How the shipped ceiling relates to the fixed-rate runs: the fastest rates it lets the
    population reach, and whether any fixed rate at or below it diverged."""
    settings = LRRangeConfig()
    reached = below_high = diverged = scored = 0
    for cell, read in zip(cells, reads):
        if read is None or cell["band"]["low"] is None:
            continue
        _, high, _, ceiling = read_range(read["reading"], settings, cell["optimizer"])
        scored += 1
        below_high += cell["fastest"] <= high * 1.0001
        reached += cell["fastest"] <= ceiling * 1.0001
        diverged += cell["lowest_diverged"] is not None and cell["lowest_diverged"] <= ceiling
    print(f"\nThe fastest rate lies at or below lr_high in {below_high}/{scored} cells, at or below the ceiling in "
          f"{reached}/{scored}; a fixed rate at or below the ceiling diverged in {diverged}/{scored}")


def load_suite(out: Path, families: list[str], batches: list[int], seed: int, run: bool, rates: int,
               fraction: float | None = None) -> list[dict[str, Any]]:
    """The cells of every finished sweep of one seed (running the missing ones first when `run`),
    their bands re-derived at a lower target when `fraction` is given (`retargeted`)."""
    cells: list[dict[str, Any]] = []
    for name in families:
        for batch in batches:
            summary = out / "results" / experiment_name(name, batch, seed) / "sweep.json"
            if run:
                summary = run_cell_group(out, name, FAMILIES[name], batch, rates, seed)
            if summary.is_file():
                found = load_cells(summary, name, batch)
                if fraction is not None:
                    found = retargeted(found, summary, FAMILIES[name], fraction)
                    print(f"{name} batch {batch}: target {found[0]['target']:.3f} (the best run's at {fraction:g} of "
                          f"{FAMILIES[name].max_epochs} epochs; the family's own {FAMILIES[name].target:g})")
                cells += found
    return cells


def print_replicate(first: list[dict[str, Any]], again: list[dict[str, Any]], seed: int) -> None:
    """How far a second seed's brute force and range test agree with the first's: the noise floor
    of the scores. A perfect rule is still judged against one seed's band and fastest rate."""
    mine = {(c["family"], c["batch"], c["optimizer"]): c for c in again}
    pairs = [(c, mine[key]) for c in first if (key := (c["family"], c["batch"], c["optimizer"])) in mine
             and c["band"]["low"] is not None and mine[key]["band"]["low"] is not None]
    if not pairs:
        print(f"\nNo cell has a band at both seed 0 and seed {seed}")
        return
    near = centred = 0
    # Today's rule per cell with a curve at both seeds: seed 1's range on seed 0's sweep, then each
    # seed's range on its own sweep, as (inside, within 2x) counts.
    cross, own_first, own_again = [0, 0], [0, 0], [0, 0]
    drifts = []
    for cell, other in pairs:
        fastest = other["fastest"]
        near += 0.5 <= fastest / cell["fastest"] <= 2.0
        centred += score(cell, fastest / math.sqrt(2), fastest * math.sqrt(2), fastest)[0]
        read, read_again = features(cell), features(other)
        if read is None or read_again is None:
            continue
        first_range, again_range = shipped_range(cell, read), shipped_range(other, read_again)
        for tally, hit in ((cross, score(cell, *again_range)), (own_first, score(cell, *first_range)),
                           (own_again, score(other, *again_range))):
            tally[0], tally[1] = tally[0] + hit[0], tally[1] + hit[1]
        drifts.append(abs(math.log2(again_range[1] / first_range[1])))
    total, read_both = len(pairs), len(drifts)
    print(f"\nSeed {seed} against seed 0, over the {total} cells with a band at both:")
    print(f"- seed {seed}'s fastest rate is within 2x of seed 0's in {near}/{total} ({near / total:.0%}): the most a "
          "suggestion can expect against one seed's fastest rate")
    print(f"- a range of width 2 centred on seed {seed}'s fastest rate lies inside seed 0's band in {centred}/{total} "
          f"({centred / total:.0%})")
    if read_both:
        print(f"- today's rule, read off seed {seed}'s range test and scored against seed 0's sweep: inside "
              f"{cross[0]}/{read_both} ({cross[0] / read_both:.0%}), within 2x {cross[1]}/{read_both} "
              f"({cross[1] / read_both:.0%}); its lr_high moved by a median {2 ** float(np.median(drifts)):.2f}x "
              f"between the seeds (at most {2 ** max(drifts):.2f}x)")
        print(f"- today's rule on each seed's own range tests and sweeps: inside {own_first[0]}/{read_both} and "
              f"{own_again[0]}/{read_both}, within 2x {own_first[1]}/{read_both} and {own_again[1]}/{read_both} "
              f"(seed 0, seed {seed}): what chance moves a score by")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("calibration"))
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of: " + ", ".join(FAMILIES))
    parser.add_argument("--batches", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--rates", type=int, default=29, help="learning rates from 1e-5 to 100 (29: 4 a decade)")
    parser.add_argument("--report-only", action="store_true", help="report the finished sweeps; run nothing")
    parser.add_argument("--fit", action="store_true", help="also search the rules for the best-scoring one")
    parser.add_argument("--bases", default=",".join(BASES), help="the features --fit searches, of: " + ", ".join(BASES))
    parser.add_argument("--target-epochs", type=float, metavar="FRACTION",
                        help="score against bands re-derived at a lower target: the best run's accuracy at this fraction of the epochs")
    parser.add_argument("--replicate", type=int, metavar="SEED",
                        help="run (or read) the sweeps again with this seed and compare them with seed 0's: the noise floor")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    families, batches = args.families.split(","), [int(batch) for batch in args.batches.split(",")]
    if args.replicate:
        again = load_suite(out, families, batches, args.replicate, not args.report_only, args.rates)
        print_replicate(load_suite(out, families, batches, 0, False, args.rates), again, args.replicate)
        return 0
    cells = load_suite(out, families, batches, 0, not args.report_only, args.rates, args.target_epochs)
    reads = [features(cell) for cell in cells]
    before = [(c["test"]["lr_low"], c["test"]["lr_high"], c["test"]["suggestion"]) if "lr_low" in c["test"] else None
              for c in cells]
    table(cells, before, "As the sweeps ran (the rule of the code that ran them)")
    table(cells, [shipped_range(c, r) if r else None for c, r in zip(cells, reads)], "With today's rule")
    print_ceiling(cells, reads)
    ratios = ceiling_ratio(cells, reads)
    if ratios:
        print(f"\nband top / divergence point over {len(ratios)} cells: min {ratios[0]:.3g}, 10th percentile "
              f"{ratios[len(ratios) // 10]:.3g}, median {ratios[len(ratios) // 2]:.3g}")
    if args.fit:
        bases = tuple(args.bases.split(","))
        rule = fit(cells, reads, bases)
        print(f"\nbest rule of the shipped shape over all cells: {json.dumps(rule)}")
        table(cells, [rule_range(c, r, rule) if r else None for c, r in zip(cells, reads)], "With that rule")
        headroom = sorted(c["band"]["high"] / rule_range(c, r, rule)[1] for c, r in zip(cells, reads)
                          if r is not None and c["band"]["low"] is not None)
        tenth = headroom[len(headroom) // 10]
        print(f"\nband top / that rule's lr_high over {len(headroom)} cells: min {headroom[0]:.3g}, 10th percentile "
              f"{tenth:.3g}, median {headroom[len(headroom) // 2]:.3g}: a ceiling of lr_high x {max(tenth, 1.0):.3g} stays "
              "inside the band in 90% of the cells")
        inside, near, scored = held_out(cells, reads, bases)
        print(f"\nEach family read by the rule fitted on the others: inside {inside}/{scored} ({inside / max(scored, 1):.0%}), "
              f"within 2x {near}/{scored} ({near / max(scored, 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
