"""`pbt lr-find` end to end: what it prints and the files a user opens afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pbt.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quadratic_config(tmp_path: Path) -> Path:
    path = tmp_path / "quadratic.yaml"
    path.write_text(yaml.safe_dump({
        "name": "quad",
        "trainable": f"{synthetic.__file__}:QuadraticTrainer",
        "storage_path": str(tmp_path / "results"),
        "lr_range": {"lr_min": 1e-5, "lr_max": 1e3, "momentum": 0.0, "seeds": 2},
    }))
    return path


def test_lr_find_prints_the_range_and_writes_json_plot_and_tensorboard(quadratic_config, tmp_path, capsys):
    assert main(["lr-find", str(quadratic_config)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "results" / "quad"
    record = json.loads((folder / "lr_range.json").read_text())

    assert f"[{record['lr_low']:.3g}, {record['lr_high']:.3g}]" in out
    assert "diverges at" in out and str(folder / "lr_range.png") in out
    # The quadratic's optimum is lr = 1; its range must sit below it (see test_range_test).
    assert 0 < record["lr_low"] < record["suggestion"] < record["lr_high"] < 1.0
    assert record["config"]["lr_range"]["seeds"] == 2
    [result] = record["ranges"]
    assert len(result["lrs"]) == len(result["losses"]) == len(result["smoothed"]) > 20

    with Image.open(folder / "lr_range.png") as image:
        assert image.width > 600 and image.height > 300

    events = EventAccumulator(str(folder / "tensorboard" / "lr_range" / "weight_decay=0"))
    events.Reload()
    assert {"lr_range/loss", "lr_range/loss_smoothed", "lr_range/learning_rate"} <= set(events.Tags()["scalars"])
    losses = [e.value for e in events.Scalars("lr_range/loss")]
    assert losses == pytest.approx(result["losses"], rel=1e-6)
    assert [e.value for e in events.Scalars("lr_range/learning_rate")] == pytest.approx(result["lrs"], rel=1e-6)
    assert "lr_range/loss_vs_lr" in events.Tags()["images"]


def test_the_default_experiment_runs_from_the_command_line(tmp_path):
    # The README's first command, as a user runs it: the installed console script.
    command = [sys.executable, "-m", "pbt", "lr-find", str(REPO / "configs" / "mnist1d.yaml"),
               f"storage_path={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "mnist1d" / "lr_range.json").read_text())
    assert 1e-3 < record["lr_low"] < record["lr_high"] < 0.2  # SGD with momentum on MNIST-1D
    assert "Learning-rate range" in done.stdout and "Traceback" not in done.stderr
