"""How far the seeds' own ranges spread: each seed's curve read alone, the one line `pbt lr-find`
prints about it, and `lr_range.json` with and without the per-seed ranges."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import synthetic

from pbt.config import LRRangeConfig, validate_config
from pbt.range_test.finder import Curve, RangeResult, RangeTest, find_lr_range, read_curve, read_range, seed_ranges
from pbt.range_test.report import load_range_test, median_spread, print_range_test, save_range_test, seeds_text

LRS = np.geomspace(1e-6, 10, 140)


def _fall_at(centre: float, seed: int = 0) -> list[float]:
    """A plateau at 2.3, a fall of 1.3 around `centre`, a climb from 30x `centre` on, a little seeded noise."""
    x = np.log10(LRS) - math.log10(centre)
    clean = 2.3 - 1.3 / (1 + np.exp(-4 * x)) + np.where(x > 1.5, 10 * (x - 1.5) ** 2, 0)
    return list(clean + 0.01 * np.random.default_rng(seed).standard_normal(len(LRS)))


def _curve(losses: list[float]) -> Curve:
    return Curve(list(LRS), losses, "loss diverged", len(LRS), len(LRS), "sgd")


def _result(highs: list[float], seeds: int | None = None, unread: tuple[int, ...] = ()) -> RangeResult:
    own = [{"seed": seed, "lr_low": high / 2, "lr_high": high, "suggestion": high / 2**0.5} for seed, high in enumerate(highs)]
    own += [{"seed": seed, "unread": "the training loss never fell clearly"} for seed in unread]
    return RangeResult(0.02, 0.04, 0.028, 0.2, 0.4, 0.8, "loss diverged", 0.0, [], [], [],
                       seeds=seeds or len(own), seed_ranges=own)


def test_each_seed_is_read_alone_by_the_rule_that_reads_the_median():
    settings = LRRangeConfig()
    curves = {7: _curve(_fall_at(1e-2, seed=7)), 8: _curve(_fall_at(3e-2, seed=8)),
              9: _curve([2.3 + 0.01 * math.sin(i) for i in range(len(LRS))])}  # seed 9's loss never falls
    found = seed_ranges(curves, settings, "sgd+momentum")
    for own, seed in zip(found[:2], (7, 8)):
        expected = read_range(read_curve(LRS, curves[seed].losses), settings, "sgd+momentum")
        assert own == {"seed": seed, "lr_low": expected[0], "lr_high": expected[1], "suggestion": expected[2]}
    assert found[1]["lr_high"] / found[0]["lr_high"] == pytest.approx(3, rel=0.2), "a fall 3x higher reads 3x higher"
    assert found[2]["seed"] == 9 and found[2]["unread"].startswith("the training loss never fell clearly")
    adam = seed_ranges(curves, settings, "adam")
    assert adam[0]["lr_high"] == pytest.approx(1.1 * found[0]["lr_high"]), "the optimizer's shift applies alone too"


def test_the_seeds_line_says_how_far_their_own_ranges_lie_apart_and_the_median_moves():
    assert seeds_text(_result([0.0312, 0.0498, 0.04])) == (
        "3 sweeps: their own lr_high from 0.0312 to 0.0498 (1.6x apart); the range above reads their median curve, "
        "which moves about 1.5x with the seed")


def test_the_median_of_more_seeds_moves_less_for_the_same_spread():
    # Normal scatter: 3 seeds 2.8x apart put their median's range of 5 experiments at 2.8^(1.56/1.69).
    assert median_spread(2.8, 3, 3) == pytest.approx(2.8 ** (1.56 / 1.69))
    assert median_spread(2.8, 5, 5) < median_spread(2.8, 3, 3) < 2.8
    assert median_spread(1.0, 3, 3) == 1.0
    assert [median_spread(2.8, 3, n) < 2 for n in (5, 7)] == [False, True]


def test_over_2x_the_line_says_so_and_how_many_seeds_would_do():
    assert seeds_text(_result([0.0212, 0.0598, 0.04])) == (
        "3 sweeps: their own lr_high from 0.0212 to 0.0598 (2.8x apart); the range above reads their median curve, "
        "which moves about 2.6x with the seed: over 2x, run more with lr_range.seeds=7")
    assert "over 2x" not in seeds_text(_result([0.0212, 0.0598, 0.04, 0.05, 0.03])), "5 seeds 2.8x apart: 1.7x"
    assert seeds_text(_result([0.01, 0.09, 0.04, 0.05, 0.03])).endswith(
        "which moves about 3.3x with the seed: over 2x even with 15 seeds; look at lr_range.png or give the range as search.lr")
    # Two seeds say too little of the scatter to tell how far their median moves.
    assert seeds_text(_result([0.0212, 0.0598])) == (
        "2 sweeps: their own lr_high from 0.0212 to 0.0598 (2.8x apart); the range above reads their median curve: "
        "over 2x apart, run more with lr_range.seeds=5")
    assert "over" not in seeds_text(_result([0.02, 0.04])), "2x apart is not over 2x"


def test_seeds_whose_curve_reads_no_range_are_named():
    assert seeds_text(_result([0.03, 0.05, 0.04], unread=(3,))) == (
        "4 sweeps: their own lr_high from 0.03 to 0.05 (1.7x apart; seed 3's curve reads no range alone); "
        "the range above reads their median curve, which moves about 1.5x with the seed")
    assert seeds_text(_result([0.03], unread=(1, 2))) == (
        "3 sweeps: seed 0's own lr_high 0.03 (the curves of seeds 1, 2 read no range alone); "
        "the range above reads their median curve")


def test_one_seed_or_an_old_result_prints_no_seeds_line(capsys):
    assert seeds_text(_result([0.03])) is None
    assert seeds_text(_result([], seeds=3)) is None  # saved before the seeds' own ranges were recorded
    print_range_test(RangeTest([_result([], seeds=3)], 0.0), seconds=1.0)
    assert "Seeds" not in capsys.readouterr().out


QUADRATIC = {"trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer",
             "lr_range": {"lr_min": 1e-5, "lr_max": 1e3, "momentum": 0.0, "seeds": 2}}


@pytest.fixture(scope="module")
def quadratic_test() -> tuple:
    config = validate_config({**QUADRATIC, "seed": 3})
    return config, find_lr_range(config)


def test_a_range_test_of_several_seeds_records_and_prints_their_own_ranges(quadratic_test, capsys):
    _, sweep = quadratic_test
    own = sweep.chosen.seed_ranges
    assert [o["seed"] for o in own] == [3, 4], "the sweeps' seeds: the experiment's, and the next"
    assert all(o["lr_low"] < o["suggestion"] < o["lr_high"] for o in own)
    print_range_test(sweep, seconds=1.0)
    lines = capsys.readouterr().out.splitlines()
    seeds = next(line for line in lines if line.startswith("Seeds"))
    assert seeds == "Seeds                 " + seeds_text(sweep.chosen)
    assert lines.index(seeds) == 1 + next(i for i, line in enumerate(lines) if line.startswith("Learning-rate range")) + (
        sweep.chosen.lr_ceiling > sweep.chosen.lr_high), "right under the range (and its ceiling)"


def test_lr_range_json_round_trip(quadratic_test, tmp_path):
    config, sweep = quadratic_test
    paths = save_range_test(sweep, config, tmp_path)
    record = json.loads(paths["json"].read_text())
    assert record["seed_ranges"] == sweep.chosen.seed_ranges and len(record["seed_ranges"]) == 2
    loaded = load_range_test(paths["json"])
    assert loaded.to_dict() == sweep.to_dict()
    assert loaded.chosen.own_highs() == sweep.chosen.own_highs()


def test_an_lr_range_json_from_before_the_seeds_own_ranges_still_loads(quadratic_test, tmp_path, capsys):
    config, sweep = quadratic_test
    path = save_range_test(sweep, config, tmp_path)["json"]
    record = json.loads(path.read_text())
    del record["seed_ranges"]
    for saved in record["ranges"]:  # and the other keys older files lack
        for key in ("seed_ranges", "read_as", "fall", "noise", "steps_per_decade", "flat_decades", "doubts",
                    "lr_ceiling", "planned_steps", "epoch_steps"):
            del saved[key]
    path.write_text(json.dumps(record))
    old = load_range_test(path)
    assert old.chosen.seed_ranges == [] and old.chosen.lr_high == sweep.chosen.lr_high
    assert seeds_text(old.chosen) is None
    print_range_test(old, seconds=1.0)
    assert "Learning-rate range" in capsys.readouterr().out
    record["ranges"][0]["a_key_of_a_later_version"] = 1
    path.write_text(json.dumps(record))
    assert load_range_test(path).chosen.lr_high == sweep.chosen.lr_high, "keys it does not know are ignored"
