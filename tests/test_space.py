"""Search space and clipped exploration: pure functions, no Ray."""

from __future__ import annotations

import random

import pytest

from pbt.config import validate_config
from pbt.range_test.finder import RangeResult, RangeTest
from pbt.search.space import Bound, SearchSpace, explore, search_space, space_from_dict

SPACE = SearchSpace(
    lr=Bound(0.01, 0.05, log=True), momentum=Bound(0.85, 0.95, log=False, complement=True), weight_decay=Bound(1e-5, 1e-3, log=True)
)


def test_exploration_never_leaves_the_bounds_over_thousands_of_draws():
    rng = random.Random(0)
    values = {"member": 7, "lr": 0.05, "momentum": 0.95, "weight_decay": 1e-5}  # start on the walls
    seen = {name: set() for name in SPACE.bounds}
    for _ in range(5000):
        values, changes = explore(values, SPACE, rng, resample_probability=0.25, factors=(0.8, 1.2))
        for name, bound in SPACE.bounds.items():
            assert bound.low <= values[name] <= bound.high
            seen[name].add(changes[name].rsplit("(", 1)[1].split(",")[0].rstrip(")"))
        assert values["member"] == 7
    assert seen["lr"] == seen["weight_decay"] == {"x0.8", "x1.2", "resampled"}
    assert seen["momentum"] == {"1-m x0.8", "1-m x1.2", "resampled"}


def test_explore_reports_each_change_with_old_and_new_values():
    rng = random.Random(3)
    new, changes = explore({"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}, SPACE, rng, resample_probability=0.0)
    for name in SPACE.bounds:
        old = {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}[name]
        factor = (1 - new[name]) / (1 - old) if name == "momentum" else new[name] / old
        how = f"{'1-m ' if name == 'momentum' else ''}x{round(factor, 1):g}"
        assert "clipped" not in changes[name]  # 0.9 x (0.8 | 1.2) in 1 - m stays inside [0.85, 0.95]
        assert factor == pytest.approx(0.8) or factor == pytest.approx(1.2)
        assert changes[name] == f"{name} {old:.4g} -> {new[name]:.4g} ({how})"


def test_a_clipped_change_says_so():
    rng = random.Random(0)
    _, changes = explore({"lr": 0.05, "momentum": 0.95, "weight_decay": 1e-3}, SPACE, rng, 0.0, factors=(2.0,))
    assert changes["lr"] == "lr 0.05 -> 0.05 (x2, clipped to high bound)"


def test_log_bounds_sample_log_uniformly():
    rng = random.Random(0)
    bound = Bound(1e-5, 1e-1, log=True)
    draws = [bound.sample(rng) for _ in range(4000)]
    below_1e3 = sum(d < 1e-3 for d in draws) / len(draws)
    assert below_1e3 == pytest.approx(0.5, abs=0.03)  # half the decades lie below 1e-3


def _sweep(chosen_wd: float, decays: list[float]) -> RangeTest:
    results = [RangeResult(0.01, 0.03, 0.017, 0.2, 0.3, 0.6, "loss diverged", wd, [], [], []) for wd in decays]
    return RangeTest(results, chosen_wd)


def test_space_comes_from_the_range_test_unless_the_config_gives_it():
    config = validate_config({})
    space = search_space(config, _sweep(0.0, [0.0]))
    assert (space.lr.start, space.lr.high, space.lr.log) == (0.01, 0.03, True)
    assert space.lr.low == pytest.approx(0.001)  # exploration may anneal a decade below the range
    assert (space.momentum.low, space.momentum.high) == (0.85, 0.95)
    assert (space.weight_decay.low, space.weight_decay.high) == (1e-5, 1e-3)
    given = validate_config({"search": {"lr": {"low": 0.1, "high": 0.2}, "weight_decay": {"low": 1e-4, "high": 1e-4}}})
    space = search_space(given, None)
    assert (space.lr.start, space.lr.high, space.weight_decay.low) == (0.1, 0.2, 1e-4)


def test_weight_decay_range_centres_on_the_weight_decay_test():
    space = search_space(validate_config({}), _sweep(3e-4, [0.0, 3e-4, 3e-3]))
    assert (space.weight_decay.low, space.weight_decay.high) == pytest.approx((1e-4, 9e-4))


def test_members_start_inside_the_range_and_explore_below_it():
    bound = Bound(0.001, 0.03, log=True, start_low=0.01)
    rng = random.Random(0)
    assert all(0.01 <= bound.sample(rng) <= 0.03 for _ in range(1000))
    assert bound.clip(0.002) == 0.002 and bound.clip(0.0001) == 0.001 and bound.clip(0.05) == 0.03
    domain = bound.domain()
    assert (domain.lower, domain.upper) == (0.01, 0.03)


@pytest.mark.parametrize("optimizer, searched", [
    ("sgd", True), ("adam", True), ("adamw", True), ("rmsprop", True), ("adagrad", False), ("adadelta", False),
])
def test_momentum_is_searched_only_where_the_optimizer_has_one(optimizer, searched):
    space = search_space(validate_config({"trainer": {"optimizer": optimizer}}), _sweep(0.0, [0.0]))
    assert ("momentum" in space.searched) is searched
    assert (space.momentum is not None) is searched
    # Members carry all three hyperparameters either way; without momentum it is the 0 read back.
    assert list(space.bounds) == ["lr", "momentum", "weight_decay"]
    if not searched:
        held = space.bounds["momentum"]
        assert held.sample(random.Random(0)) == 0.0 and held.domain().categories == [0.0]


def test_explore_leaves_an_absent_momentum_alone():
    space = SearchSpace(SPACE.lr, None, SPACE.weight_decay)
    rng = random.Random(0)
    values = {"member": 1, "lr": 0.02, "momentum": 0.0, "weight_decay": 1e-4}
    for _ in range(500):
        values, changes = explore(values, space, rng, resample_probability=0.25)
        assert values["momentum"] == 0.0
        assert set(changes) == {"lr", "weight_decay"}


def test_a_space_without_momentum_is_saved_and_read_back_without_it():
    space = SearchSpace(SPACE.lr, None, SPACE.weight_decay)
    saved = space.to_dict()
    assert set(saved) == {"lr", "weight_decay"}
    assert space_from_dict(saved) == space
    # job.json of an experiment from before has a momentum bound: it is read back as searched.
    older = {**saved, "momentum": {"low": 0.85, "high": 0.95, "log": False, "complement": True}}
    assert space_from_dict(older) == SearchSpace(SPACE.lr, SPACE.momentum, SPACE.weight_decay)


def test_exploration_may_rise_above_the_range_up_to_the_ceiling():
    found = RangeTest([RangeResult(0.01, 0.03, 0.017, 0.2, 0.3, 0.6, "loss diverged", 0.0, [], [], [], lr_ceiling=0.12)], 0.0)
    space = search_space(validate_config({}), found)
    assert (space.lr.start, space.lr.start_top, space.lr.high) == pytest.approx((0.01, 0.03, 0.12))
    rng = random.Random(0)
    assert all(0.01 <= space.lr.sample(rng) <= 0.03 for _ in range(1000)), "members start inside the range"
    domain = space.lr.domain()
    assert (domain.lower, domain.upper) == (0.01, 0.03)
    values = {"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4}
    highest = 0.0
    for _ in range(200):
        values, _ = explore(values, space, rng, resample_probability=0.0, factors=(1.2,))
        highest = max(highest, values["lr"])
    assert highest == pytest.approx(0.12), "exploration reaches the ceiling and stops there"
    assert space_from_dict(space.to_dict()) == space


def test_a_range_given_in_the_config_keeps_its_walls():
    space = search_space(validate_config({"search": {"lr": {"low": 0.1, "high": 0.2}}}), None)
    assert space.lr.start_top == space.lr.high == 0.2


def test_a_space_saved_before_the_ceiling_reads_back_with_the_walls_at_the_range():
    saved = {"lr": {"low": 0.001, "high": 0.03, "start_low": 0.01, "log": True, "complement": False},
             "weight_decay": {"low": 1e-5, "high": 1e-3, "start_low": 1e-5, "log": True}}
    space = space_from_dict(saved)
    assert (space.lr.start, space.lr.start_top, space.lr.high) == (0.01, 0.03, 0.03)


@pytest.mark.parametrize("span, start, top", [(1, 0.01, 0.03), (2, 0.005, 0.06), (6, 0.01 / 6, 0.12)])
def test_members_may_start_over_the_range_widened_up_to_the_ceiling(span, start, top):
    found = RangeTest([RangeResult(0.01, 0.03, 0.017, 0.2, 0.3, 0.6, "loss diverged", 0.0, [], [], [], lr_ceiling=0.12)], 0.0)
    config = validate_config({"search": {"lr_start_span": span, "lr_anneal_factor": 1}})
    space = search_space(config, found)
    widened = space.population_start(span)
    assert (widened.lr.start, widened.lr.start_top, widened.lr.high) == pytest.approx((start, top, 0.12))
    assert widened.lr.low == pytest.approx(min(0.01, start)), "the low wall makes room for the lowest start"
    domain = widened.lr.domain()
    assert (domain.lower, domain.upper) == pytest.approx((start, top))
    assert space_from_dict(widened.to_dict()).to_dict() == widened.to_dict(), "job.json keeps it"
    assert (space.lr.start, space.lr.start_top) == (0.01, 0.03), "the grid and one-cycle keep the range"
