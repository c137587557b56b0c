"""Member-epochs per wall second for 16 MNIST-1D members: packed against the actor engine and a bare loop.

Three ways to train the same 16 members (the default config's model and data, SGD, batch 32, a
spread of learning rates) for `--epochs` epochs on this machine, side by side in one run:

- actor engine: pbt's grid arm on Ray Tune with `population.pack=1`, one member per process
  (what a user of Ray Tune gets: a trial per member, `resources.cpu=1` each);
- packed engine: the same grid arm with `population.pack=auto`, one pack per CPU slot;
- bare loop: one plain PyTorch process per CPU core, each training its share of the members one
  after another (no Ray, no evaluation beyond pbt's own per-epoch validation), the floor a
  hand-written script would reach.

Both engines include what a run costs: actor start-up, evaluation, reports, checkpoints. Each
engine's steps alone (Tune's `time_total_s` of its trials, shared over the slots that run at once)
say what it would reach without start-up: the packed engine's over the actor engine's whole run
bounds what any saving outside the training step could give. Then the core alone, in one process
on one thread: one pack's epoch against the same members stepped one after another.

    python scripts/bench_packed.py --epochs 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

import torch

from pbt.config import validate_config
from pbt.engines.packed.model import PackedTrainer
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer

MEMBERS = 16


def points(count: int) -> list[dict]:
    return [{"member": m, "lr": 0.01 * (1 + m % 4), "momentum": 0.9, "weight_decay": 1e-4} for m in range(count)]


def engine_rate(pack: int | str, epochs: int, members: int) -> tuple[float, float]:
    """Member-epochs per second of the grid arm on Ray Tune: the whole run (start-up and evaluation
    included), and its steps alone (training and evaluation inside the trials, over the slots)."""
    import ray

    from pbt.cluster.session import ensure_ray
    from pbt.engines.packed.plan import plan_packing
    from pbt.engines.tuner import run_grid

    with tempfile.TemporaryDirectory() as folder:
        config = validate_config({"name": f"bench_{pack}", "storage_path": folder,
                                  "population": {"size": members, "epochs": epochs, "pack": pack}})
        ensure_ray()
        packing = plan_packing(config, points(members), ray.cluster_resources())
        started = time.perf_counter()
        results = run_grid(config, points(members), packing=packing)
        seconds = time.perf_counter() - started
        assert not results.errors, results.errors
        slots = ray.cluster_resources()["CPU"] // config.resources.cpu
        stepping = sum(result.metrics["time_total_s"] for result in results) / min(slots, len(results))
    return members * epochs / seconds, members * epochs / stepping


def _bare_worker(args: tuple[list[dict], int]) -> None:
    share, epochs = args
    torch.set_num_threads(1)
    config = validate_config({})
    trainers = []
    for point in share:
        trainer = build_trainer(config, seed=point["member"])
        set_hyperparams(trainer.optimizer, lr=point["lr"], momentum=point["momentum"],
                        weight_decay=point["weight_decay"])
        trainers.append(trainer)
    for _ in range(epochs):
        for trainer in trainers:
            trainer.train_epoch()
            trainer.evaluate()


def bare_rate(epochs: int, members: int) -> float:
    """Member-epochs per second of one plain process per core (data and models built before the clock)."""
    cores = os.cpu_count() or 1
    shares = [points(members)[core::cores] for core in range(cores)]
    validate_config({})  # the data set is generated (and cached) before timing
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        pool.map(_bare_worker, [(share, 0) for share in shares])  # warm the processes: imports, data cache
        started = time.perf_counter()
        pool.map(_bare_worker, [(share, epochs) for share in shares])
        seconds = time.perf_counter() - started
    return members * epochs / seconds


def core_rates(rounds: int, members: int) -> tuple[float, float]:
    """One process, one thread: a pack's epoch against the same members stepped one after another."""
    torch.set_num_threads(1)
    config = validate_config({})
    separate = [build_trainer(config, seed=p["member"]) for p in points(members)]
    for trainer, point in zip(separate, points(members)):
        set_hyperparams(trainer.optimizer, lr=point["lr"], momentum=0.9, weight_decay=1e-4)
    pack = PackedTrainer.build(config, range(members), [{k: p[k] for k in ("lr", "momentum", "weight_decay")}
                                                        for p in points(members)])
    packed, one_by_one = [], []
    for round_ in range(rounds + 1):  # one warm-up round each, not timed; rounds alternate
        started = time.perf_counter()
        pack.train_epoch()
        packed.append(time.perf_counter() - started)
        started = time.perf_counter()
        for trainer in separate:
            trainer.train_epoch()
        one_by_one.append(time.perf_counter() - started)
    return members / statistics.median(packed[1:]), members / statistics.median(one_by_one[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each member in the engine and bare runs")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of the in-process core comparison")
    args = parser.parse_args()

    print(f"MNIST-1D, {args.members} members, SGD, batch 32, {args.epochs} epochs each, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}", flush=True)
    bare = bare_rate(args.epochs, args.members)
    print(f"  bare loop, one process per core   {bare:7.1f} member-epochs/s", flush=True)
    actors, actor_steps = engine_rate(1, args.epochs, args.members)
    print(f"  actor engine (pack=1)             {actors:7.1f} member-epochs/s, steps alone {actor_steps:.1f}",
          flush=True)
    packed, packed_steps = engine_rate("auto", args.epochs, args.members)
    print(f"  packed engine (pack=auto)         {packed:7.1f} member-epochs/s, steps alone {packed_steps:.1f}",
          flush=True)
    print(f"  packed / actor engine: {packed / actors:.2f}x   packed / bare loop: {packed / bare:.2f}x   "
          f"actor engine / bare loop: {actors / bare:.2f}x")
    print(f"  packed steps alone / actor engine: {packed_steps / actors:.2f}x (the most packing can give here "
          f"with a start-up that costs nothing)")
    pack_core, separate_core = core_rates(args.rounds, args.members)
    print(f"core, one process, one thread ({args.rounds} epochs each, interleaved): packed {pack_core:.1f}, "
          f"one after another {separate_core:.1f} member-epochs/s: {pack_core / separate_core:.2f}x")


if __name__ == "__main__":
    main()
