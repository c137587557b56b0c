"""The grid baseline's points: same budget as the population, values from the search space or the config."""

from __future__ import annotations

import math

import pytest

from pbt.config import validate_config
from pbt.search.grid import grid_axes, grid_points, point_label
from pbt.search.space import Bound, SearchSpace

SPACE = SearchSpace(Bound(0.01, 0.04, log=True), Bound(0.85, 0.95, log=False, complement=True), Bound(1e-5, 1e-3, log=True))


@pytest.mark.parametrize("size, lrs, momenta, decays", [(16, 4, 2, 2), (8, 2, 2, 2), (12, 3, 2, 2), (4, 2, 1, 2), (2, 2, 1, 1)])
def test_default_grid_spends_the_populations_budget(size, lrs, momenta, decays):
    axes = grid_axes(validate_config({"population": {"size": size, "epochs": 8}}), SPACE)
    assert (len(axes["lr"]), len(axes["momentum"]), len(axes["weight_decay"])) == (lrs, momenta, decays)
    assert len(grid_points(axes)) == size


def test_default_learning_rates_are_log_spaced_around_the_range():
    axes = grid_axes(validate_config({"population": {"size": 16}, "grid": {"lr_span": 2.0}}), SPACE)
    lrs = axes["lr"]
    assert lrs[0] == pytest.approx(0.01 / 2) and lrs[-1] == pytest.approx(0.04 * 2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))
    assert axes["momentum"] == [0.85, 0.95] and axes["weight_decay"] == [1e-5, 1e-3]


def test_the_grid_reaches_the_ceiling_that_pbt_may_explore_to():
    space = SearchSpace(lr=Bound(0.001, 0.2, log=True, start_low=0.01, start_high=0.04), momentum=SPACE.momentum,
                        weight_decay=SPACE.weight_decay)
    lrs = grid_axes(validate_config({"population": {"size": 16}, "grid": {"lr_span": 2.0}}), space)["lr"]
    assert lrs[0] == pytest.approx(0.01 / 2) and lrs[-1] == pytest.approx(0.2)


def test_a_single_secondary_value_is_the_middle_of_its_bounds():
    axes = grid_axes(validate_config({"population": {"size": 2, "epochs": 4}}), SPACE)
    assert axes["momentum"] == [pytest.approx(0.9)]
    assert axes["weight_decay"] == [pytest.approx(math.sqrt(1e-5 * 1e-3))]


def test_configured_values_win_and_the_optimizer_is_an_axis():
    config = validate_config({
        "population": {"size": 8},
        "grid": {"lr": [0.1, 0.2], "momentum": [0.9], "weight_decay": [0.0, 1e-4], "optimizer": ["sgd", "adam"]},
    })
    axes = grid_axes(config, SPACE)
    assert axes == {"optimizer": ["sgd", "adam"], "lr": [0.1, 0.2], "momentum": [0.9], "weight_decay": [0.0, 1e-4]}
    points = grid_points(axes)
    assert len(points) == 8 and [p["member"] for p in points] == list(range(8))
    assert {(p["optimizer"], p["lr"], p["weight_decay"]) for p in points} == {
        (o, lr, wd) for o in ("sgd", "adam") for lr in (0.1, 0.2) for wd in (0.0, 1e-4)
    }
    assert point_label(points[0]) == "sgd lr=0.1 momentum=0.9 wd=0"


def test_point_labels_are_distinct_for_the_default_grid():
    points = grid_points(grid_axes(validate_config({"population": {"size": 16}}), SPACE))
    assert len({point_label(p) for p in points}) == 16


@pytest.mark.parametrize("optimizer", ["adagrad", "adadelta"])
def test_an_optimizer_without_momentum_spends_the_momentum_budget_on_learning_rates(optimizer):
    config = validate_config({"population": {"size": 16}, "trainer": {"optimizer": optimizer}})
    space = SearchSpace(SPACE.lr, None, SPACE.weight_decay)  # as search_space builds it for this optimizer
    axes = grid_axes(config, space)
    assert (len(axes["lr"]), axes["momentum"], len(axes["weight_decay"])) == (8, [0.0], 2)
    points = grid_points(axes)
    assert len(points) == 16
    assert len({(p["lr"], p["weight_decay"]) for p in points}) == 16, "no point trained twice"
    assert point_label(points[0]) == f"lr={axes['lr'][0]:.3g} wd=1e-05", "no momentum in the name"


def test_a_grid_over_optimizers_trains_no_duplicate_for_the_one_without_momentum():
    config = validate_config({"population": {"size": 16}, "grid": {"optimizer": ["sgd", "adagrad"]}})
    axes = grid_axes(config, SPACE)
    assert (len(axes["lr"]), axes["momentum"], len(axes["weight_decay"])) == (2, [0.85, 0.95], 2)
    points = grid_points(axes)
    by_optimizer = {name: [p for p in points if p["optimizer"] == name] for name in ("sgd", "adagrad")}
    assert len(by_optimizer["sgd"]) == 8 and {p["momentum"] for p in by_optimizer["sgd"]} == {0.85, 0.95}
    assert len(by_optimizer["adagrad"]) == 4 and {p["momentum"] for p in by_optimizer["adagrad"]} == {0.0}
    assert [p["member"] for p in points] == list(range(12))
    assert len({point_label(p) for p in points}) == 12


def test_a_grid_of_optimizers_without_momentum_gets_momentum_nowhere():
    # The trainer's own optimizer (sgd) has momentum, the grid's do not: the momentum budget goes to lrs.
    config = validate_config({"population": {"size": 16}, "grid": {"optimizer": ["adagrad", "adadelta"]}})
    axes = grid_axes(config, SPACE)
    assert (len(axes["lr"]), axes["momentum"], len(axes["weight_decay"])) == (4, [0.0], 2)
    assert len(grid_points(axes)) == 16


def test_momentum_values_come_from_the_config_when_only_another_optimizer_has_momentum():
    config = validate_config({
        "population": {"size": 16}, "trainer": {"optimizer": "adagrad"}, "grid": {"optimizer": ["adagrad", "sgd"]},
        "search": {"momentum": {"low": 0.8, "high": 0.9}},
    })
    axes = grid_axes(config, SearchSpace(SPACE.lr, None, SPACE.weight_decay))
    assert axes["momentum"] == [0.8, 0.9]
    assert len(grid_points(axes)) == 12
