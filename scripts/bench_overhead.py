"""Orchestration overhead of a PBT run: how much of the machine goes to training, not to Tune.

A population of 8 on the 2 local CPUs, MNIST-1D, 20 reports per member. Efficiency is
(seconds of compute the members report) / (2 slots x wall seconds of `Tuner.fit()`), with
`ray.init` excluded. Targets: >= 0.95 at about 1 s of compute per report, >= 0.80 at about 0.3 s.

In the same run, a reference written the way Ray's own PBT examples are (a function trainable
that reports a checkpoint every iteration, default Tune settings) trains the same model for the
same budget, and the ratio of the two wall times is printed.

    python scripts/bench_overhead.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from pbt.cluster.session import ensure_ray
from pbt.config import ExperimentConfig, validate_config
from pbt.engines.actor.trainable import PBTMember
from pbt.engines.tuner import run_population
from pbt.optim import HYPERPARAMS, set_hyperparams
from pbt.registry import build_trainer
from pbt.search.space import Bound, SearchSpace

SLOTS = 2
SPACE = SearchSpace(Bound(0.01, 0.04, log=True), Bound(0.85, 0.95, log=False, complement=True), Bound(1e-5, 1e-3, log=True))
PHASES = ("setup", "save", "load", "reset")


class TimedMember(PBTMember):
    """PBTMember that also reports the seconds it spent outside `step` since its last report."""

    def setup(self, config, experiment=None):
        self.spent = dict.fromkeys(PHASES, 0.0)
        self.setup_at = time.time()
        started = time.perf_counter()
        super().setup(config, experiment)
        self.spent["setup"] += time.perf_counter() - started

    def _timed(self, phase, call, *args):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.spent[phase] += time.perf_counter() - started

    def save_checkpoint(self, checkpoint_dir):
        return self._timed("save", super().save_checkpoint, checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir):
        return self._timed("load", super().load_checkpoint, checkpoint_dir)

    def _start_fresh(self):
        return self._timed("setup", super()._start_fresh)

    def reset_config(self, new_config):
        return self._timed("reset", super().reset_config, new_config)

    def step(self):
        result = super().step()
        result.update({f"spent_{phase}": seconds for phase, seconds in self.spent.items()}, setup_at=self.setup_at)
        self.spent = dict.fromkeys(PHASES, 0.0)
        return result


def reference_trainable(config: dict, experiment: ExperimentConfig) -> None:
    """Ray's PBT example pattern: restore from `tune.get_checkpoint()`, report a checkpoint every iteration."""
    trainer = build_trainer(experiment, seed=experiment.seed + config["member"])
    set_hyperparams(trainer.optimizer, **{k: config[k] for k in HYPERPARAMS})
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=True)
        trainer.load_state_dict(state["trainer"])
        set_hyperparams(trainer.optimizer, **{k: config[k] for k in HYPERPARAMS})
        start = state["epoch"]
    for epoch in range(start, experiment.population.epochs):
        started = time.perf_counter()
        metrics = {**trainer.train_epoch(), **trainer.evaluate()}
        metrics["compute_seconds"] = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"trainer": trainer.state_dict(), "epoch": epoch + 1}, Path(folder) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run_reference(experiment: ExperimentConfig, storage: Path, callbacks: list) -> tune.ResultGrid:
    population = experiment.population
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric="val_acc",
        mode="max",
        perturbation_interval=population.perturbation_interval,
        hyperparam_mutations={name: bound.domain() for name, bound in SPACE.bounds.items()},
        quantile_fraction=population.quantile_fraction,
    )
    tuner = tune.Tuner(
        tune.with_parameters(reference_trainable, experiment=experiment),
        param_space={"member": tune.grid_search(list(range(population.size))),
                     **{name: bound.domain() for name, bound in SPACE.bounds.items()}},
        tune_config=tune.TuneConfig(scheduler=scheduler),
        run_config=tune.RunConfig(name="reference", storage_path=str(storage), verbose=0, callbacks=callbacks),
    )
    return tuner.fit()


class KeepResults(tune.Callback):
    """Every result the driver receives (a trial's own progress.csv loses rows when it is exploited)."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.results.append(result)


def measure(label: str, run) -> tuple[float, float, float, list[dict]]:
    """Wall time of `run` (a Tuner.fit), and efficiency from every report the members made.

    Each run gets a fresh Ray instance (its start is not timed, like `ray.init`): the reference
    kills and starts worker processes, and their leftovers would otherwise steal CPU from the next run.
    """
    ray.shutdown()
    ensure_ray(num_cpus=SLOTS)
    kept = KeepResults()
    started_at = time.time()
    started = time.perf_counter()
    grid = run([kept])
    wall = time.perf_counter() - started
    assert not grid.errors, grid.errors
    compute = sum(r["compute_seconds"] for r in kept.results)
    efficiency = compute / (SLOTS * wall)
    print(f"  {label:<28} wall {wall:6.1f} s   compute {compute:6.1f} s   {len(kept.results):>4} reports "
          f"({compute / len(kept.results):.2f} s each)   efficiency {efficiency:.3f}", flush=True)
    return wall, efficiency, started_at, kept.results


def breakdown(wall: float, started_at: float, rows: list[dict]) -> None:
    """Where the 2 x wall slot-seconds of our run went, from the phases TimedMember reports."""
    total = SLOTS * wall
    spent = {"training (compute_seconds)": sum(r["compute_seconds"] for r in rows)}
    spent["trainer + data set-up"] = sum(r["spent_setup"] for r in rows)
    spent["checkpoint save"] = sum(r["spent_save"] for r in rows)
    spent["checkpoint load"] = sum(r["spent_load"] for r in rows)
    spent["reset_config"] = sum(r["spent_reset"] for r in rows)
    first_setup = min(r["setup_at"] for r in rows) - started_at
    spent["Tune: actor start, pause/resume, bookkeeping (rest)"] = total - sum(spent.values())
    print(f"    where the {total:.1f} slot-seconds went (first actor set up {first_setup:.1f} s after fit() began):")
    for name, seconds in spent.items():
        print(f"      {name:<52} {seconds:7.1f} s  {seconds / total:6.1%}")


def calibrate(samples_per_second_at: int = 8000) -> float:
    """Seconds of one epoch + evaluation per training sample, single-threaded as a Ray worker runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = build_trainer(validate_config({"trainer": {"num_samples": samples_per_second_at}}))
        trainer.train_epoch()
        started = time.perf_counter()
        trainer.train_epoch()
        trainer.evaluate()
        return (time.perf_counter() - started) / samples_per_second_at
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--reports", type=int, default=20)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference run")
    args = parser.parse_args()
    per_sample = calibrate()
    for seconds, target in ((1.0, 0.95), (0.3, 0.80)):
        # The epoch length sets the compute per report.
        samples = round(seconds / per_sample)
        experiment = validate_config({
            "name": "bench",
            "trainer": {"num_samples": samples},
            "population": {"size": args.members, "epochs": args.reports, "perturbation_interval": args.interval},
        })
        build_trainer(experiment)  # generate and cache the data set outside the timed runs
        print(f"~{seconds} s per report ({samples} samples): population {args.members}, {args.reports} reports each, "
              f"interval {args.interval}, {SLOTS} CPU slots (target >= {target})", flush=True)
        with tempfile.TemporaryDirectory() as storage:
            storage = Path(storage)
            ours_experiment = experiment.model_copy(update={"storage_path": str(storage / "ours")})
            ours, ours_eff, started_at, results = measure("pbt (class, reused actors)", lambda callbacks: run_population(
                ours_experiment, SPACE, callbacks=callbacks, member_class=TimedMember))
            breakdown(ours, started_at, results)
            if not args.no_reference:
                ref, _, _, _ = measure("reference (Ray PBT example)", lambda callbacks: run_reference(
                    experiment, storage, callbacks))
                print(f"  wall time, reference / pbt: {ref / ours:.2f}x", flush=True)
        print(f"  target met: {ours_eff >= target}\n", flush=True)


if __name__ == "__main__":
    main()
