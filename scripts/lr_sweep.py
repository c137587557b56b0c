"""Check the LR range test against ground truth: train at many fixed learning rates.

As in the 500-run seed experiment: log-spaced fixed learning rates (48 from 1e-6 to 100 by
default), each trained from the same seed until it reaches a target validation accuracy or runs
out of epochs. The learning rates that reach the target form the band that "trains well"; the
range test's `[lr_low, lr_high]` (run on the same config) should lie inside it. The range test is
repeated with fresh seeds (`--range-repeats`), since one test is itself a random draw.

    python scripts/lr_sweep.py configs/mnist1d.yaml trainer.optimizer=sgd --out sweep-sgd.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from pbt.config import ExperimentConfig, load_config
from pbt.lr_range import find_lr_range
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer


def train_fixed_lr(config_json: str, lr: float, target: float, max_epochs: int) -> dict:
    """Train at one constant learning rate; return epochs to target (None if never) and the best accuracy."""
    torch.set_num_threads(1)
    config = ExperimentConfig.model_validate_json(config_json)
    trainer = build_trainer(config)
    # The same momentum and weight decay the range test held.
    set_hyperparams(trainer.optimizer, lr=lr, momentum=config.lr_range.momentum,
                    weight_decay=config.lr_range.weight_decays[0])
    best, reached = 0.0, None
    for epoch in range(1, max_epochs + 1):
        loss = trainer.train_epoch()["train_loss"]
        if not math.isfinite(loss):
            break
        best = max(best, trainer.evaluate()["val_acc"])
        if best >= target:
            reached = epoch
            break
    return {"lr": lr, "epochs_to_target": reached, "best_val_acc": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--rates", type=int, default=48)
    parser.add_argument("--lr-min", type=float, default=1e-6)
    parser.add_argument("--lr-max", type=float, default=100.0)
    parser.add_argument("--target", type=float, default=0.85, help="validation accuracy to reach")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--range-repeats", type=int, default=5, help="range tests, each with fresh seeds")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    config = load_config(args.config, args.overrides)
    started = time.perf_counter()
    ranges = [find_lr_range(config.model_copy(update={"seed": config.seed + k * config.lr_range.seeds})).chosen
              for k in range(args.range_repeats)]

    rates = np.geomspace(args.lr_min, args.lr_max, args.rates).tolist()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(train_fixed_lr, [config.model_dump_json()] * len(rates), rates,
                             [args.target] * len(rates), [args.max_epochs] * len(rates)))
    good = [r["lr"] for r in runs if r["epochs_to_target"] is not None]
    band = (min(good), max(good)) if good else None
    print(f"{'lr':>10} {'epochs to target':>17} {'best val acc':>13}")
    for run in runs:
        epochs = run["epochs_to_target"] if run["epochs_to_target"] is not None else "-"
        print(f"{run['lr']:>10.3g} {epochs!s:>17} {run['best_val_acc']:>13.3f}")
    fastest = min((r for r in runs if r["epochs_to_target"]), key=lambda r: r["epochs_to_target"], default=None)
    print(f"band reaching {args.target:.0%} val acc in <= {args.max_epochs} epochs: "
          + (f"[{band[0]:.3g}, {band[1]:.3g}], fastest lr {fastest['lr']:.3g} ({fastest['epochs_to_target']} epochs)"
             if band else "none"))
    inside = [band is not None and band[0] <= r.lr_low and r.lr_high <= band[1] for r in ranges]
    for k, (r, ok) in enumerate(zip(ranges, inside)):
        print(f"range test {k + 1} (seeds from {config.seed + k * config.lr_range.seeds}): "
              f"[{r.lr_low:.3g}, {r.lr_high:.3g}], suggestion {r.suggestion:.3g}, diverges at {r.divergence_lr:.3g}"
              f"  {'inside' if ok else 'NOT inside'} the band")
    print(f"ranges inside the band: {sum(inside)} of {len(inside)}   ({time.perf_counter() - started:.0f} s)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"config": config.model_dump(), "runs": runs, "band": band, "target": args.target,
                       "max_epochs": args.max_epochs, "ranges": [{"lr_low": r.lr_low, "lr_high": r.lr_high,
                       "divergence_lr": r.divergence_lr, "inside_band": ok} for r, ok in zip(ranges, inside)]},
                      handle, indent=1)


if __name__ == "__main__":
    main()
