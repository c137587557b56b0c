"""The schedule through the commands: PBT and the grid follow it on both engines, one-cycle keeps its own."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml
from ray.tune.schedulers import TrialScheduler

from pbt.cli import main
from pbt.config import validate_config
from pbt.engines.actor.scheduler import ClippedPBT
from pbt.schedule import ScheduleConfig
from pbt.search.space import search_space

pytestmark = pytest.mark.slow

EPOCHS = 4
SCHEDULE = {"shape": "cosine", "final_factor": 0.0}


def run(tmp_path, command: str, **population) -> tuple[str, list[dict], dict]:
    config = tmp_path / "scheduled.yaml"
    config.write_text(yaml.safe_dump({
        "name": "scheduled", "storage_path": str(tmp_path / "results"),
        "trainer": {"num_samples": 1000, "width": 0.5, "batch_size": 32},
        "search": {"lr": {"low": 0.02, "high": 0.08}},
        "schedule": SCHEDULE,
        "population": {"size": 4, "epochs": EPOCHS, "perturbation_interval": 2, "quantile_fraction": 0.25, **population},
    }))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([command, str(config)])
    assert code == 0, out.getvalue()
    folder = tmp_path / "results" / "scheduled"
    reports = {arm: [json.loads(line) for line in (folder / arm / "reports.jsonl").read_text().splitlines()]
               for arm in ("pbt", "grid", "one_cycle") if (folder / arm).is_dir()}
    return out.getvalue(), reports, folder


def epoch_factor(epoch: int, steps: int = 20) -> float:
    """The mean factor of an epoch's steps: 640 training examples in batches of 32 make 20."""
    schedule = ScheduleConfig(**SCHEDULE)
    return sum(schedule.factor(((epoch - 1) * steps + s) / (EPOCHS * steps)) for s in range(steps)) / steps


def assert_follows_the_schedule(reports: list[dict]) -> None:
    for report in reports:
        assert report["lr_trained"] == pytest.approx(report["lr"] * epoch_factor(report["epoch"]), rel=1e-5), report


def test_packed_pbt_and_grid_follow_the_schedule_and_one_cycle_keeps_its_own(ray_session, tmp_path):
    out, reports, folder = run(tmp_path, "run")
    assert "Schedule: cosine, down to 0 x lr at the end; every member and grid point follows it" in out
    assert "packed:" in out
    assert_follows_the_schedule(reports["pbt"])
    assert_follows_the_schedule(reports["grid"])
    assert all(r["lr_trained"] == r["lr"] for r in reports["one_cycle"]), "OneCycleLR sets its own rate"
    best = json.loads((folder / "lineage.json").read_text())["best"]
    assert [e["lr_trained"] < e["lr"] for e in best["schedule"]] == [True] * EPOCHS
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["arms"]) == {"pbt", "grid", "one_cycle"}


def test_the_actor_engine_grid_follows_the_same_schedule(ray_session, tmp_path):
    _, reports, _ = run(tmp_path, "grid", pack=1)
    assert len({r["label"] for r in reports["grid"]}) == 4
    assert_follows_the_schedule(reports["grid"])


def test_no_pack_is_exploited_after_exploit_until(ray_session, tmp_path):
    """6 epochs, a perturbation every 2, exploits only up to epoch 3: at epoch 2 and never at 4."""
    config = tmp_path / "frozen.yaml"
    config.write_text(yaml.safe_dump({
        "name": "frozen", "storage_path": str(tmp_path / "results"),
        "trainer": {"num_samples": 1000, "width": 0.5, "batch_size": 32},
        "search": {"lr": {"low": 0.001, "high": 0.3}},
        "population": {"size": 4, "epochs": 6, "perturbation_interval": 2, "quantile_fraction": 0.5, "exploit_until": 0.5},
    }))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pbt", str(config)]) == 0, out.getvalue()
    exploits = json.loads((tmp_path / "results" / "frozen" / "lineage.json").read_text())["exploits"]
    assert exploits and {e["epoch"] for e in exploits} == {2}


def test_the_actor_scheduler_stops_exploiting_after_exploit_until():
    config = validate_config({"search": {"lr": {"low": 0.01, "high": 0.1}},
                              "population": {"epochs": 60, "exploit_until": 0.8}})
    scheduler = ClippedPBT(search_space(config, None), config.population, metric="val_acc")
    assert scheduler.last_exploit_epoch == 48
    # Past epoch 48 Ray's own step (which would need a live controller) is never reached.
    assert scheduler.on_trial_result(None, None, {"training_iteration": 52, "val_acc": 0.5}) == TrialScheduler.CONTINUE
