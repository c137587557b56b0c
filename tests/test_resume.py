"""The `pbt` process killed mid-run, then `pbt resume`: the experiment finishes and nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from resumed import assert_resumed_to_completion

pytestmark = pytest.mark.slow

EPOCHS = 30
SNAPSHOT_SECONDS = 10  # Tune snapshots the experiment state at most this often; a kill loses what came after


def reports(folder: Path) -> list[dict]:
    path = folder / "pbt" / "reports.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_killed_driver_is_resumed_to_completion(tmp_path):
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killed",
        "storage_path": str(tmp_path / "results"),
        "trainer": {"num_samples": 6000, "width": 0.5, "batch_size": 16},
        "search": {"lr": {"low": 0.01, "high": 0.05}},
        "population": {"size": 4, "epochs": EPOCHS, "perturbation_interval": 3, "quantile_fraction": 0.25},
    }))
    folder = tmp_path / "results" / "killed"
    env = {**os.environ, "RAY_ADDRESS": ""}
    # Its own session, so the kill takes the driver and the local Ray it started, as a killed job would.
    driver = subprocess.Popen([sys.executable, "-m", "pbt", "pbt", str(config)], start_new_session=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not reports(folder):
        assert driver.poll() is None and time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.2)
    time.sleep(SNAPSHOT_SECONDS + 3)  # past Tune's first snapshot of trials with checkpoints
    assert driver.poll() is None, "the run ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = reports(folder)
    assert not (folder / "lineage.json").exists()

    done = subprocess.run([sys.executable, "-m", "pbt", "resume", str(folder)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Resuming" in done.stdout and "Best member" in done.stdout

    assert_resumed_to_completion(before, reports(folder), members=4, epochs=EPOCHS)
    lineage = json.loads((folder / "lineage.json").read_text())
    assert [entry["epoch"] for entry in lineage["best"]["schedule"]] == list(range(1, EPOCHS + 1))
