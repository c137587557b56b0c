"""A member whose worker process dies mid-run is restarted from its last checkpoint; the run completes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import synthetic
from ray import tune

from pbt.config import validate_config
from pbt.engines.tuner import run_population
from pbt.reporting.records import ReportRecorder, read_reports
from pbt.search.space import search_space

pytestmark = pytest.mark.slow

VICTIM, KILL_AFTER_EPOCH, EPOCHS = 1, 5, 10


class KillOnce(tune.Callback):
    """Kills the worker process of one member (the pid Tune reports with every result), once."""

    def __init__(self) -> None:
        self.killed_pid: int | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.killed_pid is None and trial.config["member"] == VICTIM and result["training_iteration"] >= KILL_AFTER_EPOCH:
            self.killed_pid = result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


def test_a_killed_member_resumes_from_its_checkpoint_and_the_run_completes(ray_session, tmp_path):
    config = validate_config({
        "name": "failing",
        "storage_path": str(tmp_path),
        "trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer",
        "trainer": {"samples": 8192},
        "search": {"lr": {"low": 0.05, "high": 0.5}, "momentum": {"low": 0.0, "high": 0.5}},
        "population": {"size": 4, "epochs": EPOCHS, "perturbation_interval": 2, "quantile_fraction": 0.25},
        "seed": 3,
    })
    killer = KillOnce()
    grid = run_population(config, search_space(config, None),
                          callbacks=[ReportRecorder("pbt", tmp_path / "records"), killer])

    assert killer.killed_pid is not None
    assert not grid.errors
    assert sorted(r.metrics["training_iteration"] for r in grid) == [EPOCHS] * 4
    victim = [r["epoch"] for r in read_reports(tmp_path / "records") if r["label"] == f"member_{VICTIM:02d}"]
    killed_at = next(i for i, epoch in enumerate(victim) if epoch >= KILL_AFTER_EPOCH)  # the report that triggered the kill
    resumed_from = victim[killed_at + 1] - 1
    # It went back to a checkpoint (at most one perturbation interval of work redone), not to epoch 0.
    assert 0 < resumed_from <= victim[killed_at]
    assert victim[killed_at] - resumed_from <= config.population.perturbation_interval
