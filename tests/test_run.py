"""`pbt run` end to end on a tiny MNIST-1D: every arm, the comparison, and the TensorBoard a user opens."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from pbt.cli import main

pytestmark = pytest.mark.slow

COMPARE_TAGS = {"vs_epochs_trained/best_val_acc", "vs_epochs_trained/test_acc_of_best_val",
                "vs_seconds_trained/best_val_acc", "best_schedule/lr", "best_schedule/momentum",
                "best_schedule/weight_decay"}


@pytest.fixture(scope="module")
def experiment(ray_session, tmp_path_factory):
    """One `pbt run` for every test here: 4 members, 4 epochs, a 4-point grid and a one-cycle run."""
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny",
        "storage_path": str(root / "results"),
        "trainer": {"num_samples": 3000, "width": 0.5, "batch_size": 16},
        "lr_range": {"seeds": 1, "lr_min": 1e-3},
        "population": {"size": 4, "epochs": 4, "perturbation_interval": 2, "quantile_fraction": 0.25},
    }))
    return root, config


@pytest.fixture(scope="module")
def finished(experiment):
    root, config = experiment
    out = root / "stdout.txt"
    with out.open("w") as stream, contextlib.redirect_stdout(stream):
        code = main(["run", str(config)])
    return code, root / "results" / "tiny", out.read_text()


def test_the_main_job_runs_every_arm_and_compares_them(finished):
    code, folder, out = finished
    assert code == 0, out
    for arm, runs in (("pbt", 4), ("grid", 4), ("one_cycle", 1)):
        reports = [json.loads(line) for line in (folder / arm / "reports.jsonl").read_text().splitlines()]
        assert len({r["label"] for r in reports}) == runs
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["arms"]) == {"pbt", "grid", "one_cycle"}
    grid = summary["arms"]["grid"]
    # Same budget: 4 grid points x 4 epochs, and the population's 4 members x 4 epochs.
    assert grid["epochs"] == 16 and grid["runs"] == 4
    assert summary["arms"]["pbt"]["epochs"] <= 16 + 4  # clones may retrain a few epochs
    assert summary["target_val_acc"] == pytest.approx(grid["chosen"]["val_acc"])
    assert summary["arms"]["grid"]["to_target"]["epochs"] <= 16
    assert "Comparison of" in out and "one-cycle" in out and "tensorboard --logdir" in out
    for name in ("compare_accuracy.png", "compare_schedule.png"):
        with Image.open(folder / name) as image:
            assert image.width > 800
    lineage = json.loads((folder / "lineage.json").read_text())
    assert len(lineage["best"]["schedule"]) == 4


def test_tensorboard_holds_the_comparison_every_run_and_the_hparams(finished):
    _, folder, _ = finished
    summary = json.loads((folder / "summary.json").read_text())
    logdir = folder / "tensorboard"
    for arm in ("pbt", "grid", "one_cycle"):
        events = EventAccumulator(str(logdir / "compare" / arm))
        events.Reload()
        assert COMPARE_TAGS <= set(events.Tags()["scalars"])
        best = events.Scalars("vs_epochs_trained/best_val_acc")
        assert best[-1].value == pytest.approx(summary["arms"][arm]["best_val_acc"], abs=1e-6)
        assert best[-1].step == summary["arms"][arm]["epochs"]
    pbt_schedule = EventAccumulator(str(logdir / "compare" / "pbt"))
    pbt_schedule.Reload()
    lineage = json.loads((folder / "lineage.json").read_text())
    assert [e.value for e in pbt_schedule.Scalars("best_schedule/lr")] == pytest.approx(
        [entry["lr"] for entry in lineage["best"]["schedule"]], rel=1e-6)

    member_runs = sorted(p.name for p in (logdir / "pbt").iterdir())
    assert member_runs == ["member_00", "member_01", "member_02", "member_03"]
    assert len(list((logdir / "grid").iterdir())) == 4 and (logdir / "lr_range").is_dir()
    member = EventAccumulator(str(logdir / "pbt" / "member_00"))
    member.Reload()
    assert {"member/val_acc", "member/test_acc", "member/lr", "member/train_loss"} <= set(member.Tags()["scalars"])
    # The HPARAMS dashboard: each run says its hyperparameters and final metrics.
    hparams = member.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert set(start.hparams) == {"arm", "lr", "momentum", "weight_decay"}
    assert start.hparams["arm"].string_value == "pbt"
    assert member.Scalars("final/val_acc")[-1].value > 0.1


def test_a_real_tensorboard_serves_the_comparison(finished):
    _, folder, _ = finished
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(folder / "tensorboard"), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        runs = _wait_for_json(f"{base}/data/runs", lambda runs: "compare/pbt" in runs)
        assert {"compare/pbt", "compare/grid", "compare/one_cycle", "pbt/member_00"} <= set(runs)
        query = urllib.parse.urlencode({"run": "compare/grid", "tag": "vs_epochs_trained/best_val_acc"})
        points = _wait_for_json(f"{base}/data/plugin/scalars/scalars?{query}", bool)
        summary = json.loads((folder / "summary.json").read_text())
        assert points[-1][2] == pytest.approx(summary["arms"]["grid"]["best_val_acc"], abs=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_json(url: str, ready, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data = json.loads(response.read())
            if ready(data):
                return data
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"TensorBoard did not serve {url} within {timeout} s")
        time.sleep(1.0)


def test_a_second_run_refuses_to_mix_with_the_first(finished, experiment, capsys):
    _, config = experiment
    assert main(["run", str(config)]) == 2
    assert "already holds results of pbt, grid, one_cycle; pass --overwrite" in capsys.readouterr().err


def test_comparing_again_rewrites_the_comparison_runs(finished, capsys):
    _, folder, _ = finished
    assert main(["compare", str(folder)]) == 0
    assert "Comparison of" in capsys.readouterr().out
    for arm in ("pbt", "grid", "one_cycle"):
        assert len(list((folder / "tensorboard" / "compare" / arm).glob("events.out.tfevents.*"))) == 1
