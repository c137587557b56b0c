"""`pbt sweep`: the band and the fastest rate, run outcomes, the stopper, the width fit, and the command end to end."""

from __future__ import annotations

import contextlib
import json
import math
import shlex
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pbt.cli import main
from pbt.config import validate_config
from pbt.stages.sweep_runs import (
    DIVERGED,
    NOT_REACHED,
    REACHED,
    TargetStopper,
    band,
    fit_line,
    run_outcome,
    summarize,
    sweep_points,
)

SYNTHETIC = str(Path(__file__).parent / "synthetic.py") + ":QuadraticTrainer"


def run(lr: float, status: str, epochs: int | None = None, seconds: float | None = None) -> dict:
    entry = {"lr": lr, "status": status}
    if status == REACHED:
        entry.update(epochs_to_target=epochs, seconds_to_target=seconds)
    return entry


def test_the_band_is_the_unbroken_stretch_around_the_fastest_rate():
    runs = [run(1e-4, NOT_REACHED), run(1e-3, REACHED, 9, 9.0), run(1e-2, NOT_REACHED),  # a gap
            run(3e-2, REACHED, 6, 6.1), run(1e-1, REACHED, 3, 3.2), run(3e-1, REACHED, 3, 2.9),
            run(1.0, REACHED, 5, 5.0), run(3.0, DIVERGED), run(10.0, DIVERGED)]
    found = band(list(reversed(runs)))  # any order: the band follows the learning rates
    assert (found["low"], found["high"]) == (3e-2, 1.0)
    # Fewest epochs first; the tie at 3 epochs goes to the fewer seconds.
    assert found["fastest"] == {"lr": 3e-1, "epochs_to_target": 3, "seconds_to_target": 2.9}
    assert found["reached"] == 5 and found["runs"] == 9
    assert found["outside"] == [1e-3]


def test_no_run_reaching_the_target_gives_no_band():
    found = band([run(1e-3, NOT_REACHED), run(1.0, DIVERGED)])
    assert found["low"] is None and found["high"] is None and found["fastest"] is None
    assert found["reached"] == 0 and found["runs"] == 2


def record(epoch: int, acc: float | None, seconds: float = 1.0, diverged: bool = False) -> dict:
    return {"label": "000 sgd lr=0.1", "epoch": epoch, "val_acc": acc, "compute_seconds": seconds, "diverged": diverged}


def test_a_run_reaches_the_target_at_its_first_epoch_at_or_above_it():
    outcome = run_outcome([record(3, 0.95, 1.5), record(1, 0.5, 1.0), record(2, 0.9, 1.25)], "val_acc", 0.9)
    assert outcome == {"status": REACHED, "epochs": 2, "seconds": 2.25, "best": 0.9,
                       "epochs_to_target": 2, "seconds_to_target": 2.25}


def test_a_diverged_or_short_run_is_kept_as_failed():
    diverged = run_outcome([record(1, 0.4), record(2, None, diverged=True)], "val_acc", 0.9)
    assert diverged["status"] == DIVERGED and diverged["epochs"] == 2 and diverged["best"] == 0.4
    short = run_outcome([record(1, 0.4), record(2, 0.7)], "val_acc", 0.9)
    assert short["status"] == NOT_REACHED and short["best"] == 0.7 and "epochs_to_target" not in short


def test_every_point_of_the_sweep_has_an_outcome_even_without_reports():
    settings = validate_config({"sweep": {"rates": 3, "lr_min": 0.01, "lr_max": 1.0, "optimizers": ["sgd", "adagrad"],
                                          "split": "val"}}).sweep
    points = sweep_points(settings, settings.optimizers)
    assert [(p["optimizer"], p["momentum"]) for p in points[::3]] == [("sgd", 0.0), ("adagrad", 0.0)]
    records = [{**record(1, 0.95), "label": "001 sgd lr=0.1"}]
    found = summarize(points, records, ["005 adagrad lr=1"], settings, {"sgd": {"lr_low": 0.05, "lr_high": 0.2}})
    assert [r["status"] for r in found["sgd"]["runs"]] == [NOT_REACHED, REACHED, NOT_REACHED]
    assert [r["status"] for r in found["adagrad"]["runs"]] == [NOT_REACHED, NOT_REACHED, "failed"]
    assert found["sgd"]["range_inside_band"] is False  # the band is [0.1, 0.1]
    assert found["adagrad"]["range_test"] == {"error": "not run"} and found["adagrad"]["range_inside_band"] is None


def pack_result(accs: list[float | None], diverged: tuple[int, ...] = (), seconds: float = 1.0) -> dict:
    members = {str(slot): {"member": slot, "train_acc": acc, "diverged": slot in diverged, "compute_seconds": seconds}
               for slot, acc in enumerate(accs)}
    return {"members": members, "training_iteration": 1}


def test_the_stopper_ends_a_pack_when_every_member_is_done():
    stopper = TargetStopper("train_acc", 0.9, max_seconds=100.0)
    assert not stopper("pack", pack_result([0.95, 0.5, 0.2], diverged=(2,)))
    # Member 0 reached it once: it stays done even if it dips below the target later.
    assert not stopper("pack", pack_result([0.85, 0.8, 0.2], diverged=(2,)))
    assert stopper("pack", pack_result([0.85, 0.91, 0.2], diverged=(2,)))
    assert not stopper.stop_all()
    slow = TargetStopper("train_acc", 0.9, max_seconds=2.5)
    assert [slow("actor", {"train_acc": 0.1, "compute_seconds": 1.0}) for _ in range(3)] == [False, False, True]


def test_the_stopper_stops_everything_when_the_accuracy_is_not_reported():
    stopper = TargetStopper("train_acc", 0.9, max_seconds=100.0)
    stopper("actor", {"val_acc": 0.5, "compute_seconds": 1.0})
    assert stopper.stop_all()


def test_the_fit_recovers_a_line_and_says_how_well_it_fits():
    fit = fit_line([1000, 2000, 4000, 8000], [1.5 + 0.002 * n for n in (1000, 2000, 4000, 8000)])
    assert fit["c"] == pytest.approx(1.5) and fit["k"] == pytest.approx(0.002) and fit["r2"] == pytest.approx(1.0)
    noisy = fit_line([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert 0 < noisy["r2"] < 1
    assert fit_line([5, 5], [1.0, 2.0]) is None


def sweep(root: Path, name: str, settings: dict, *args: str) -> tuple[int, Path, str]:
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"name": name, "storage_path": str(root / "results"), **settings}))
    out = root / f"{name}.txt"
    with out.open("w") as stream, contextlib.redirect_stdout(stream):
        code = main(["sweep", str(config), *args])
    return code, root / "results" / name, out.read_text()


@pytest.mark.slow
def test_the_sweep_finds_the_known_band_of_gradient_descent(ray_session, tmp_path):
    """Plain SGD on a quadratic with Hessian I: fastest near lr 1, diverging above lr 2 (made NaN at once here)."""
    code, folder, out = sweep(tmp_path, "quadratic", {
        "trainable": SYNTHETIC, "trainer": {"samples": 512, "nan_above": 2.0},
        "lr_range": {"seeds": 1, "lr_min": 1e-4},
        "sweep": {"optimizers": ["own"], "momentum": 0.0, "lr_min": 1e-3, "lr_max": 10.0, "rates": 9, "split": "val",
                  "target": 0.9, "max_epochs": 4}})
    assert code == 0, out
    summary = json.loads((folder / "sweep.json").read_text())
    sgd = summary["widths"][0]["optimizers"]["own"]  # the trainer's own plain SGD
    status = {round(r["lr"], 4): r["status"] for r in sgd["runs"]}
    assert status[3.1623] == status[10.0] == DIVERGED
    assert status[0.001] == NOT_REACHED  # 4 epochs of 16 steps at lr 1e-3 move the weights by 6%
    assert sgd["band"]["fastest"]["lr"] == pytest.approx(1.0, rel=0.7) and sgd["band"]["fastest"]["epochs_to_target"] == 1
    assert sgd["band"]["high"] == pytest.approx(1.0)
    assert "lr_low" in sgd["range_test"] and math.isfinite(sgd["range_test"]["lr_high"])
    assert "own " in out and "range in band" in out
    with Image.open(folder / "sweep.png") as image:
        assert image.width > 500
    assert any((folder / "tensorboard" / "sweep_summary").iterdir())


@pytest.mark.slow
def test_split_train_needs_a_trainer_that_reports_training_accuracy(ray_session, tmp_path):
    code, _, out = sweep(tmp_path, "no_train_acc", {
        "trainable": SYNTHETIC, "trainer": {"samples": 256}, "search": {"lr": {"low": 0.1, "high": 0.5}},
        "lr_range": {"seeds": 1}, "sweep": {"optimizers": ["own"], "rates": 2, "lr_min": 0.1, "lr_max": 1.0, "max_epochs": 2,
                                             "split": "train"}})
    assert code == 2


@pytest.mark.slow
def test_widths_repeat_the_packed_sweep_and_fit_time_against_weights(ray_session, tmp_path, tiny_mnist1d):
    code, folder, out = sweep(tmp_path, "widths", {
        "trainer": tiny_mnist1d, "lr_range": {"seeds": 1, "lr_min": 1e-3},
        "sweep": {"optimizers": ["sgd+momentum"], "lr_min": 0.03, "lr_max": 0.3, "rates": 3, "target": 0.2, "split": "train",
                  "max_epochs": 3}}, "--widths", "0.5,1")
    assert code == 0, out
    assert "packed: 3 runs" in out
    summary = json.loads((folder / "sweep_widths.json").read_text())
    weights = [width["weights"] for width in summary["widths"]]
    assert [width["width"] for width in summary["widths"]] == [0.5, 1.0] and weights[0] < weights[1]
    transfer = summary["width_transfer"]["sgd+momentum"]
    assert set(transfer["fastest_lr"]) == {"0.5", "1.0"}
    reached = [w for w in summary["widths"] if w["optimizers"]["sgd+momentum"]["band"]["fastest"]]
    assert len(reached) == 2 and len(transfer["points"]) == 2 and transfer["fit"] is not None
    for name in ("sweep_w0.5.png", "sweep_w1.png", "sweep_widths.png"):
        assert (folder / name).is_file()
    assert "Across widths" in out


@pytest.mark.slow
def test_readme_sweep_commands_run_as_written(ray_session, tmp_path):
    """README's `pbt sweep` lines, each with overrides appended that shrink it to seconds."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("pbt sweep ")]
    assert len(commands) == 2
    shrink = [f"storage_path={tmp_path}", "trainer.num_samples=1000", "lr_range.seeds=1", "lr_range.max_steps=40", "sweep.rates=2",
              "sweep.max_epochs=1", "--overwrite"]
    for command in commands:
        argv = [word.replace("configs/", str(Path(__file__).parents[1] / "configs") + "/") for word in shlex.split(command)]
        out = tmp_path / "out.txt"
        with out.open("w") as stream, contextlib.redirect_stdout(stream):
            assert main([*argv[1:], *shrink]) == 0, out.read_text()
    widths = json.loads((tmp_path / "mnist1d" / "sweep_widths.json").read_text())
    assert [width["width"] for width in widths["widths"]] == [1.0, 2.0, 4.0, 8.0]
    assert len(json.loads((tmp_path / "mnist1d" / "sweep.json").read_text())["widths"][0]["optimizers"]) == 6, \
        "the first command's results are kept beside the widths'"
