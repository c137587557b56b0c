"""Training-step speed of the MNIST-1D trainer against a bare PyTorch loop on the same model and data.

Both train the same CNN on the same tensors with the same optimizer; epochs alternate between
the two (ABAB...) so that a noisy, shared machine slows both alike, and the median epoch time of
each is compared. Target: the trainer runs at >= 0.95x the bare loop's speed.

    python scripts/bench_step.py --epochs 30
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from pbt.config import validate_config
from pbt.optim import make_optimizer, set_hyperparams
from pbt.registry import build_trainer


def bare_epoch(model, optimizer, x, y, batch_size: int) -> None:
    """The loop a user would write by hand: randperm, slice, forward, backward, step."""
    order = torch.randperm(len(x))
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs of each")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a PBT member gets 1 CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = validate_config({"trainer": {"optimizer": args.optimizer, "batch_size": args.batch_size}})
    trainer = build_trainer(config)
    set_hyperparams(trainer.optimizer, lr=0.01, momentum=0.9)
    model = copy.deepcopy(trainer.model)
    optimizer = make_optimizer(args.optimizer, model.parameters(), lr=0.01, momentum=0.9)
    x, y = trainer.x_train, trainer.y_train

    ours, bare = [], []
    for epoch in range(args.epochs + 2):  # two warm-up epochs each, not timed
        started = time.perf_counter()
        trainer.train_epoch()
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        bare_epoch(model, optimizer, x, y, trainer.batch_size)
        bare_seconds = time.perf_counter() - started
        if epoch >= 2:
            ours.append(ours_seconds)
            bare.append(bare_seconds)

    steps = trainer.steps_per_epoch()
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"MNIST-1D, {args.optimizer}, batch {args.batch_size}, {steps} steps/epoch, {args.threads} thread(s), "
          f"{args.epochs} epochs each, interleaved")
    print(f"  bare PyTorch loop   {bare_median * 1e3:8.1f} ms/epoch   {bare_median / steps * 1e6:7.0f} us/step")
    print(f"  pbt trainer         {ours_median * 1e3:8.1f} ms/epoch   {ours_median / steps * 1e6:7.0f} us/step")
    print(f"  speed, trainer / bare: {bare_median / ours_median:.3f}x   (target >= 0.95x)")


if __name__ == "__main__":
    main()
