"""Member-epochs per second: a packed population against the same members trained one after another.

16 MNIST-1D members (the default config's model and data) on one CPU thread, as one PBT slot
gets: once as one pack (`pbt.packed.PackedTrainer`, one vmapped model, each member on its own
batches) and once as 16 separate trainers stepped one after the other, the loop a slot runs when
each member is its own model. Rounds alternate (ABAB...) so machine noise hits both alike; the
median round of each is compared.

    python scripts/bench_packed.py --members 16 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pbt.config import validate_config
from pbt.optim import set_hyperparams
from pbt.packed import PackedTrainer
from pbt.registry import build_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of each engine")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = validate_config({"trainer": {"batch_size": args.batch_size}})
    separate = [build_trainer(config, seed=member) for member in range(args.members)]
    for member, trainer in enumerate(separate):  # a spread of hyperparameters, as a population has
        set_hyperparams(trainer.optimizer, lr=0.01 * (1 + member % 4), momentum=0.9, weight_decay=1e-4)
    pack = PackedTrainer([build_trainer(config, seed=member) for member in range(args.members)], "sgd")
    for member, trainer in enumerate(separate):
        pack.set_hyperparams(member, lr=trainer.optimizer.param_groups[0]["lr"], weight_decay=1e-4)

    packed, one_by_one = [], []
    for round_ in range(args.rounds + 1):  # one warm-up round each, not timed
        started = time.perf_counter()
        pack.train_epoch()
        packed_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for trainer in separate:
            trainer.train_epoch()
        separate_seconds = time.perf_counter() - started
        if round_:
            packed.append(packed_seconds)
            one_by_one.append(separate_seconds)

    steps = separate[0].steps_per_epoch()
    print(f"MNIST-1D, {args.members} members, SGD, batch {args.batch_size}, {steps} steps/epoch, "
          f"{args.threads} thread(s), {args.rounds} epochs each, interleaved")
    for name, seconds in (("one after another", statistics.median(one_by_one)), ("packed", statistics.median(packed))):
        print(f"  {name:<18} {seconds:7.2f} s per epoch of all members   {args.members / seconds:6.1f} member-epochs/s")
    print(f"  speed, packed / one after another: {statistics.median(one_by_one) / statistics.median(packed):.2f}x")


if __name__ == "__main__":
    main()
