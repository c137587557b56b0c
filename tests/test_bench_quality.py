"""`scripts/bench_quality.py` without training: its paired statistics on made-up rows, its report,
and its table of tasks (each resolves to a config and overrides that pbt accepts)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from pbt.config import load_config

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "scripts" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


bench = load_script()


def row(seed: int, pbt: float, grid: float, one_cycle: float | None = None, share: float | None = 0.4) -> dict:
    arms = {"pbt": pbt, "grid": grid} if one_cycle is None else {"pbt": pbt, "grid": grid, "one_cycle": one_cycle}
    return {"seed": seed, "share": share, "grid_best_val": 0.93, "minutes": 1.5, **arms,
            **{f"{name}_val": 0.93 for name in arms}, **{f"{name}_epochs": 960 for name in arms}}


ROWS = [row(0, 0.942, 0.927, 0.943), row(1, 0.931, 0.930, 0.941), row(2, 0.936, 0.937, 0.942)]


def test_paired_difference_mean_standard_error_and_seeds_ahead():
    grid = bench.paired_difference(ROWS, "grid")
    # +1.5, +0.1, -0.1 points: mean 0.5, variance (1 + 0.16 + 0.36) / 2 = 0.76
    assert grid["seeds"] == 3 and grid["ahead"] == 2
    assert grid["mean"] == pytest.approx(0.5)
    assert grid["se"] == pytest.approx(math.sqrt(0.76 / 3))
    one_cycle = bench.paired_difference(ROWS, "one_cycle")
    assert one_cycle["mean"] == pytest.approx((-0.1 - 1.0 - 0.6) / 3)
    assert one_cycle["ahead"] == 0


def test_a_tie_is_not_ahead_and_one_seed_has_no_standard_error():
    paired = bench.paired_difference([row(0, 0.94, 0.94)], "grid")
    assert paired == {"arm": "grid", "seeds": 1, "mean": 0.0, "se": None, "ahead": 0}


def test_missing_one_cycle_arm():
    rows = [row(0, 0.942, 0.927), row(1, 0.931, 0.930)]
    assert bench.paired_difference(rows, "one_cycle") is None
    assert bench.arms_of(rows) == ["pbt", "grid"]
    line = bench.ahead_target_line(rows, bench.arms_of(rows))
    assert "met, 0.50 to spare" in line and "one-cycle" not in line  # +1.5 and +0.1: mean 0.8


def test_target_line_says_which_arm_falls_short_and_by_how_much():
    line = bench.ahead_target_line(ROWS, bench.arms_of(ROWS))
    assert line.startswith("PBT ahead of every other arm by at least 0.3 points (paired mean): NOT met, one-cycle 0.87 short")
    assert line.endswith("(PBT - grid +0.50, PBT - one-cycle -0.57)")


def test_table_and_report(capsys):
    table = bench.paired_table(ROWS, bench.arms_of(ROWS))
    assert table[0] == "| seed | PBT | grid | one-cycle | PBT - grid | PBT - one-cycle | PBT to the grid's best |"
    assert table[2] == "| 0 | 0.9420 | 0.9270 | 0.9430 | +1.50 | -0.10 | 40% |"
    assert table[-2].startswith("| mean (se) | 0.9363 | 0.9313 | 0.9420 | +0.50 (se 0.50) | -0.57 (se 0.26) | median 40% |")
    assert table[-1] == "| PBT ahead |  |  |  | 2 of 3 | 0 of 3 |  |"
    bench.print_report([row(0, 0.94, 0.93, share=None)])  # one seed, PBT never reached the grid's best
    out = capsys.readouterr().out
    assert "| mean (se) | 0.9400 | 0.9300 | +1.00 (se -) | median never |" in out
    assert "PBT - grid: +1.00 points (target >= +0.5: met)" in out
    assert "(target <= 50%: NOT met)" in out


def test_rows_written_are_read_back_and_recombined(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    bench.write_rows(first, ROWS[:2], "mnist1d", Path("configs/mnist1d.yaml"), [])
    bench.write_rows(second, ROWS[2:], "mnist1d", Path("configs/mnist1d.yaml"), [])
    assert bench.read_rows([first, second]) == ROWS
    assert json.loads(first.read_text())["task"] == "mnist1d"


@pytest.mark.parametrize("name", ["mnist1d", "font_digits"])
def test_every_task_resolves_to_a_config_pbt_accepts(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PBT_CACHE_DIR", str(tmp_path))
    config, overrides = bench.task_arguments(bench.TASKS[name])
    loaded = load_config(config, [*overrides, "seed=3"])
    assert loaded.seed == 3
    if name == "font_digits":
        assert loaded.trainable == "mnist" and loaded.trainer["batch_size"] == 32
        assert overrides == [f"trainer.data_dir={tmp_path / 'font_digits-4000-1000'}"]
        assert loaded.trainer["data_dir"] == str(tmp_path / "font_digits-4000-1000")


def test_a_config_given_replaces_the_tasks_own():
    config, overrides = bench.task_arguments(bench.TASKS["mnist1d"], REPO / "configs" / "mnist.yaml")
    assert (config, overrides) == (REPO / "configs" / "mnist.yaml", [])


def test_script_runs_with_no_training_on_stored_rows(tmp_path, monkeypatch, capsys):
    stored = tmp_path / "rows.json"
    bench.write_rows(stored, ROWS, "mnist1d", Path("configs/mnist1d.yaml"), [])
    monkeypatch.setattr(sys, "argv", ["bench_quality.py", "--rows", str(stored)])
    bench.main()
    assert "NOT met, one-cycle 0.87 short" in capsys.readouterr().out
