"""The LR range test: known optima, clean stops, an untouched caller, seeds and weight decays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import synthetic
import torch
from synthetic import QuadraticTrainer

from pbt.config import LRRangeConfig, validate_config
from pbt.errors import PbtError
from pbt.optim import get_hyperparams, set_hyperparams
from pbt.range_test.finder import (
    RANGE_SHIFT,
    Curve,
    DivergenceWatch,
    RangeResult,
    choose_weight_decay,
    find_lr_range,
    median_curve,
    optimizer_key,
    read_curve,
    read_range,
    reading_basis,
    record_curve,
    shift_text,
    smooth,
    training_ceiling,
    training_range,
)
from pbt.registry import build_trainer


def quadratic(seed: int = 0, **config) -> QuadraticTrainer:
    torch.manual_seed(seed)
    return QuadraticTrainer(config, torch.device("cpu"))


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_recovers_the_known_optimum_of_a_quadratic(scale):
    # Gradient descent on this problem is fastest at lr = 1/scale^2 and diverges above 2/scale^2.
    optimum = 1.0 / scale**2
    curve = record_curve(quadratic(scale=scale), lr_min=1e-5 * optimum, lr_max=1e3 * optimum, momentum=0.0)
    reading = read_curve(curve.lrs, curve.losses)
    low, high, point = training_range(reading)
    assert curve.stop_reason == "loss diverged"
    assert reading.diverged and 2 * optimum < reading.divergence_lr <= curve.lrs[-1] < 20 * optimum
    assert 0.4 * optimum <= reading.min_loss_lr <= 2 * optimum, "the loss is lowest near the optimum"
    assert low < point < high < optimum, "the range is safely below the optimum and divergence"


def test_range_scales_with_the_problem_and_ignores_a_loss_offset():
    # The same problem rescaled (optimum x100, loss /100) or shifted negative gives the same range.
    reference = _features_relative_to_optimum(scale=1.0)
    assert _features_relative_to_optimum(scale=0.1) == pytest.approx(reference, rel=1e-6)
    assert _features_relative_to_optimum(scale=1.0, loss_offset=-100.0) == pytest.approx(reference, rel=1e-6)


def _features_relative_to_optimum(scale: float, **config) -> tuple[float, ...]:
    optimum = 1.0 / scale**2
    curve = record_curve(quadratic(scale=scale, **config), lr_min=1e-5 * optimum, lr_max=1e3 * optimum, momentum=0.0)
    reading = read_curve(curve.lrs, curve.losses)
    features = (reading.steepest_lr, reading.min_loss_lr, reading.divergence_lr, *training_range(reading))
    return tuple(v / optimum for v in features)


def test_reading_a_known_curve():
    # A smooth step from 2.3 down to 0.3 centred at lr=1e-2, then 10*log10(lr)^2 more above lr=1:
    # back at the starting 2.3 when 10 x^2 = 2, at lr = 10**sqrt(0.2) = 2.8.
    lrs = np.geomspace(1e-6, 10, 141)
    x = np.log10(lrs)
    losses = 0.3 + 2.0 / (1 + np.exp(3 * (x + 2))) + np.where(x > 0, 10 * x**2, 0)
    reading = read_curve(lrs, losses, smooth_window=1)
    assert reading.steepest_lr == pytest.approx(1e-2, rel=0.1)
    assert 1e-2 < reading.min_loss_lr <= 1.0
    assert reading.diverged and reading.divergence_lr == pytest.approx(10 ** math.sqrt(0.2), rel=0.1)
    low, high, point = training_range(reading, low_divisor=100, high_divisor=10)
    basis = reading.divergence_lr**0.75 * reading.min_loss_lr**0.25  # between the two, nearer divergence
    assert reading.min_loss_lr < basis < reading.divergence_lr
    assert (low, high) == pytest.approx((basis / 100, basis / 10))
    assert point == pytest.approx(basis / math.sqrt(1000))


def test_a_curve_that_never_climbs_back_is_flagged():
    lrs = np.geomspace(1e-6, 1, 60)
    reading = read_curve(lrs, 1 / (1 + lrs * 1e4))
    assert not reading.diverged and reading.divergence_lr == lrs[-1]


def test_a_flat_curve_is_reported_not_guessed():
    lrs = np.geomspace(1e-6, 1, 50)
    with pytest.raises(PbtError, match="never fell"):
        read_curve(lrs, np.linspace(1.0, 2.0, 50))
    noise = 2.3 + 0.01 * np.random.default_rng(0).standard_normal(50)  # dips, but only by noise
    with pytest.raises(PbtError, match="never fell clearly"):
        read_curve(lrs, noise)


def test_nan_loss_stops_the_sweep_cleanly():
    curve = record_curve(quadratic(nan_above=0.05), lr_min=1e-5, lr_max=10, momentum=0.0)
    assert curve.stop_reason == "non-finite loss"
    assert math.isnan(curve.losses[-1]) and all(math.isfinite(v) for v in curve.losses[:-1])
    assert curve.lrs[-1] > 0.05 and curve.lrs[-2] <= 0.05


def test_divergence_watch_ignores_one_spike_and_noise_but_not_a_rise():
    rng = np.random.default_rng(0)
    watch = DivergenceWatch(factor=1.0, window=5, warmup=10)
    flat = 2.3 + 0.01 * rng.standard_normal(200)
    flat[50] = 50.0  # one bad batch
    assert not any(watch.diverged(v) for v in flat)
    watch = DivergenceWatch(factor=1.0, window=5, warmup=10)
    falling_then_rising = np.concatenate([np.linspace(2.3, 1.0, 40), np.linspace(1.0, 3.0, 40)])
    flags = [watch.diverged(v) for v in falling_then_rising]
    first = flags.index(True)
    assert falling_then_rising[first] > 2.3, "stops once the loss is back above where it started"
    assert first < 40 + 30


def test_divergence_works_for_negative_losses():
    watch = DivergenceWatch(factor=1.0, window=5, warmup=10)
    curve = np.concatenate([np.linspace(-1.0, -5.0, 40), np.linspace(-5.0, 2.0, 40)])
    first = [watch.diverged(v) for v in curve].index(True)
    assert curve[first] > -1.0 and first < 80


def test_smoothing_is_centred_and_robust_to_spikes():
    values = np.linspace(0, 1, 21)
    spiked = values.copy()
    spiked[10] = 100.0
    smoothed = smooth(spiked, 5)
    assert smoothed[10] == pytest.approx(values[10], abs=0.06)
    np.testing.assert_allclose(smooth(values, 5)[2:-2], values[2:-2], atol=1e-12)  # no lag on a line


def test_caller_model_optimizer_and_rng_are_untouched(tiny_mnist1d):
    trainer = build_trainer(validate_config({"trainer": tiny_mnist1d}))
    set_hyperparams(trainer.optimizer, lr=0.01, momentum=0.9, weight_decay=1e-4)
    trainer.train_epoch()  # so there are momentum buffers to protect
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    buffers = {id(p): s["momentum_buffer"].clone() for p, s in trainer.optimizer.state.items()}
    hyperparams = get_hyperparams(trainer.optimizer)
    rng = torch.get_rng_state()
    np_draw = np.random.get_state()[1][:5].copy()

    curve = record_curve(trainer, lr_min=1e-4, lr_max=10, momentum=0.95, weight_decay=1e-2)

    assert len(curve.losses) > 10
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    for param, state in trainer.optimizer.state.items():
        torch.testing.assert_close(state["momentum_buffer"], buffers[id(param)], rtol=0, atol=0)
    assert get_hyperparams(trainer.optimizer) == hyperparams
    assert torch.equal(torch.get_rng_state(), rng)
    assert np.array_equal(np.random.get_state()[1][:5], np_draw)


def test_the_sweep_lasts_one_epoch_by_default(tiny_mnist1d):
    trainer = build_trainer(validate_config({"trainer": {**tiny_mnist1d, "num_samples": 4000}}))
    curve = record_curve(trainer, lr_min=1e-6, lr_max=1e-5)  # too small to diverge
    assert curve.stop_reason == "reached lr_max"
    assert len(curve.losses) == trainer.steps_per_epoch() == curve.planned_steps == curve.epoch_steps == 160
    assert curve.lrs[0] == pytest.approx(1e-6) and curve.lrs[-1] == pytest.approx(1e-5)


class UncountedQuadratic(synthetic.QuadraticTrainer):
    """An epoch of 10 batches that the trainer does not count; it counts the epochs drawn."""

    epochs_drawn = 0

    def steps_per_epoch(self):
        return None

    def batches(self):
        self.epochs_drawn += 1
        yield from super().batches()


@pytest.mark.parametrize("max_steps, min_steps, expected", [(None, 100, 100), (None, 5, 10), (250, 100, 250), (12, 100, 12)])
def test_a_short_epoch_is_extended_over_fresh_epochs(max_steps, min_steps, expected):
    trainer = UncountedQuadratic({"samples": 320, "batch_size": 32}, torch.device("cpu"))
    curve = record_curve(trainer, lr_min=1e-6, lr_max=1e-5, max_steps=max_steps, min_steps=min_steps)
    assert (curve.planned_steps, curve.epoch_steps) == (expected, 10)
    assert len(curve.losses) == expected and curve.stop_reason == "reached lr_max"
    assert trainer.epochs_drawn == 1 + math.ceil(expected / 10), "one pass to count the epoch, then as many as the sweep needs"


def test_median_curve_outlasts_one_early_divergence():
    lrs = list(np.geomspace(1e-3, 1, 10))
    curves = [
        Curve(lrs[:4], [1.0, 0.9, math.nan, math.nan][:3] + [math.nan], "non-finite loss"),
        Curve(lrs, [1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.3, 0.9], "reached lr_max"),
        Curve(lrs[:8], [1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 5.0], "loss diverged"),
    ]
    median = median_curve(curves)
    assert len(median.losses) == 8, "runs while at least two of three sweeps run"
    assert median.losses[:3] == [1.0, 0.8, 0.7]
    assert median.losses[3] == 0.6  # the NaN counts as the worst value, not as a hole
    assert median.stop_reason == "loss diverged / non-finite loss / reached lr_max"


def _result(weight_decay: float, lr_high: float) -> RangeResult:
    d = 20 * lr_high
    return RangeResult(d / 50, lr_high, d / 32, d / 10, d / 5, d, "loss diverged", weight_decay, [], [], [])


def test_largest_weight_decay_that_keeps_a_high_learning_rate_is_chosen():
    results = [_result(1e-5, 0.30), _result(1e-4, 0.25), _result(1e-3, 0.16), _result(1e-2, 0.02)]
    assert choose_weight_decay(results) == 1e-3  # 0.16 is within 2x of 0.30; 0.02 is not


QUADRATIC = {"trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer"}
QUADRATIC_RANGE = {"lr_min": 1e-5, "lr_max": 1e3, "momentum": 0.0}


def test_seeds_are_combined_into_one_range():
    config = validate_config({**QUADRATIC, "lr_range": {**QUADRATIC_RANGE, "seeds": 2}})
    steps: list[int] = []
    sweep = find_lr_range(config, on_step=lambda step, total, lr, loss: steps.append(step))
    result = sweep.chosen
    assert steps.count(1) == 2, "two sweeps ran"
    assert result.seeds == 2 and result.lr_low < result.suggestion < result.lr_high
    assert len(result.lrs) == len(result.losses) == len(result.smoothed)


def test_weight_decays_run_in_parallel_ray_tasks(ray_session):
    decays = [0.0, 1e-3, 1.0, 10.0]
    config = validate_config({**QUADRATIC, "lr_range": {**QUADRATIC_RANGE, "weight_decays": decays}})
    done: list[float] = []
    sweep = find_lr_range(config, on_result=lambda n, total, wd: done.append(wd))
    assert sorted(done) == decays
    by_decay = {r.weight_decay: r for r in sweep.results}
    # Weight decay adds to the curvature (Hessian 1 + wd): 1.0 halves the rate at which training
    # diverges, 1e-3 barely matters, and 10 pins the weights near zero so the loss never falls.
    assert set(by_decay) == {0.0, 1e-3, 1.0}
    assert "never fell" in sweep.failures["10.0"]
    assert by_decay[1.0].divergence_lr < 0.75 * by_decay[0.0].divergence_lr
    assert sweep.chosen_weight_decay == 1e-3
    assert sweep.to_dict()["lr_high"] == sweep.chosen.lr_high


PLATEAU = {"trainable": f"{Path(synthetic.__file__)}:PlateauTrainer", "trainer": {"samples": 320, "batch_size": 32}}
PLATEAU_RANGE = {**QUADRATIC_RANGE, "seeds": 1}  # an epoch of 10 steps: the sweep lasts min_steps, 100


def test_a_sweep_whose_loss_never_fell_is_run_again_twice_as_long():
    # 100 steps add up rates to about 6, short of the plateau of 8; 200 steps reach about 11.
    result = find_lr_range(validate_config({**PLATEAU, "lr_range": PLATEAU_RANGE})).chosen
    assert result.planned_steps == 200 and len(result.lrs) > 100
    assert 1.0 < result.divergence_lr < 3.0, "the loss climbs back soon after the rate passes 1"
    assert result.lr_low < result.lr_high < 1.0


def test_a_sweep_is_lengthened_twice_at_most_and_then_fails_in_one_line():
    config = validate_config({**PLATEAU, "trainer": {**PLATEAU["trainer"], "plateau": 30.0}, "lr_range": PLATEAU_RANGE})
    with pytest.raises(PbtError) as caught:
        find_lr_range(config)
    message = str(caught.value)
    assert "never fell clearly" in message and "in a sweep of 400 steps" in message and "search.lr" in message
    assert "\n" not in message


def test_a_sweep_length_set_in_the_config_is_kept():
    config = validate_config({**PLATEAU, "lr_range": {**PLATEAU_RANGE, "max_steps": 100}})
    with pytest.raises(PbtError, match="in a sweep of 100 steps; .*lr_range.max_steps, or give the range as search.lr"):
        find_lr_range(config)


def test_each_optimizer_reads_the_same_curve_with_its_own_shift():
    # One curve read for plain SGD, SGD with momentum, Adam, Adadelta and an optimizer the rule was
    # never calibrated on: each range is its optimizer's shift times the same basis.
    reading = read_curve(*_curve_falling_at(0.01))
    settings = LRRangeConfig()
    ranges = {key: read_range(reading, settings, key) for key in ("sgd", "sgd+momentum", "adam", "adadelta", "nadam")}
    assert optimizer_key("sgd", 0.0) == "sgd" and optimizer_key("SGD", 0.9) == "sgd+momentum"
    assert optimizer_key("NAdam", 0.9) == "nadam"
    for name, shift in (("sgd", RANGE_SHIFT["sgd"]), ("adam", RANGE_SHIFT["adam"]), ("adadelta", RANGE_SHIFT["adadelta"]),
                        ("nadam", 1.0)):
        assert ranges[name][0] == pytest.approx(shift * ranges["sgd+momentum"][0])
        assert ranges[name][1] == pytest.approx(shift * ranges["sgd+momentum"][1])
    assert shift_text("nadam") == "nadam: not calibrated, read as SGD with momentum"
    assert shift_text("adadelta") == "adadelta: the range x10 that of SGD with momentum (calibrated)"


def test_the_range_is_read_for_the_optimizer_the_trainer_built():
    # A trainer of the user's own builds Adagrad and no setting names it: the range test reads its
    # curve with Adagrad's shift. A trainer that ignores `trainer.optimizer` is read for what it built.
    own = validate_config({"trainable": f"{Path(synthetic.__file__)}:AdagradQuadraticTrainer", "lr_range": QUADRATIC_RANGE})
    result = find_lr_range(own).chosen
    assert result.read_as == "adagrad"
    assert result.lr_high == pytest.approx(RANGE_SHIFT["adagrad"] * reading_basis(result) / own.lr_range.high_divisor)
    named = validate_config({**QUADRATIC, "trainer": {"optimizer": "adam"}, "lr_range": QUADRATIC_RANGE})
    assert find_lr_range(named).chosen.read_as == "sgd"  # it built SGD; the range test held momentum 0


def _curve_falling_at(centre: float) -> tuple[np.ndarray, np.ndarray]:
    lrs = np.geomspace(1e-6, 10, 140)
    return lrs, _fall_at(lrs, centre)


def _fall_at(lrs: np.ndarray, centre: float, depth: float = 1.3, start: float = 2.3) -> np.ndarray:
    """A plateau at `start`, a fall of `depth` around `centre`, a climb above lr=1."""
    x = np.log10(lrs)
    return start - depth / (1 + np.exp(-4 * (x - math.log10(centre)))) + np.where(x > 0, 10 * x**2, 0)


def test_a_noisy_start_does_not_fall_fastest_at_the_first_rates():
    # The artefact of a real MNIST sweep: its first batches sit above the plateau, so the
    # smoothed curve's very first slope was the steepest and the curve "fell fastest at 1e-05".
    lrs = np.geomspace(1e-6, 10, 100)
    losses = _fall_at(lrs, centre=0.1) + 0.01 * np.random.default_rng(0).standard_normal(100)
    losses[:6] += 0.8  # the smoothed curve's steepest slope is here, at 3e-6 (what the old reading took)
    reading = read_curve(lrs, losses)
    assert 0.03 < reading.steepest_lr < 0.3
    assert reading.min_loss_lr > reading.steepest_lr and reading.diverged


def test_a_curve_that_falls_from_its_first_step_still_has_a_steepest_fall():
    lrs = np.geomspace(1e-3, 10, 60)
    reading = read_curve(lrs, _fall_at(lrs, centre=2e-3))
    assert reading.steepest_lr < reading.min_loss_lr


def test_a_clear_curve_raises_no_doubt():
    lrs = np.geomspace(1e-6, 10, 140)
    reading = read_curve(lrs, _fall_at(lrs, centre=1e-2) + 0.005 * np.random.default_rng(1).standard_normal(140))
    assert reading.doubts() == []
    assert reading.steps_per_decade == pytest.approx(20.0)
    assert reading.fall > 100 * reading.noise and reading.flat_decades < 1.5


def test_a_shallow_fall_is_doubted():
    lrs = np.geomspace(1e-6, 10, 140)
    noisy = _fall_at(lrs, centre=1e-2, depth=0.1) + 0.01 * np.random.default_rng(2).standard_normal(140)
    doubts = read_curve(lrs, noisy).doubts()
    assert len(doubts) == 1 and doubts[0].startswith("no clear fall")


def test_a_flat_minimum_is_doubted():
    lrs = np.geomspace(1e-6, 10, 140)
    x = np.log10(lrs)
    flat = 2.3 - 1.3 / (1 + np.exp(-4 * (x + 4))) + np.where(x > 0, 10 * x**2, 0)  # low from 1e-3 to 1: 3 decades
    doubts = read_curve(lrs, flat).doubts()
    assert len(doubts) == 1 and doubts[0].startswith("a flat minimum (")


def test_too_few_steps_per_decade_are_doubted():
    lrs = np.geomspace(1e-6, 10, 30)
    doubts = read_curve(lrs, _fall_at(lrs, centre=1e-2)).doubts()
    assert doubts == ["too few steps per decade (4.3; raise lr_range.min_steps)"]


def test_the_ceiling_lies_between_the_range_and_divergence():
    lrs = np.geomspace(1e-6, 10, 140)
    reading = read_curve(lrs, _fall_at(lrs, centre=1e-2))
    low, high, _ = training_range(reading)
    ceiling = training_ceiling(reading, high, ceiling_divisor=5.0)
    assert ceiling == pytest.approx(reading_basis(reading) / 5)
    assert high < ceiling < reading.divergence_lr
    assert training_ceiling(reading, high, ceiling_divisor=50.0) == high, "never below the range's top"
    assert training_ceiling(reading, high, 5.0, shift=2.0) == pytest.approx(2 * ceiling)
    assert training_ceiling(reading, high, 0.1) == reading.divergence_lr, "never above the divergence point"


def test_lr_find_prints_the_features_it_read_and_one_line_of_doubt(capsys):
    from pbt.range_test.finder import RangeResult, RangeTest
    from pbt.range_test.report import print_range_test

    result = RangeResult(0.01, 0.025, 0.0158, 0.1, 0.3, 0.5, "loss diverged", 0.0, [1e-3, 1.0], [2.3, 2.4], [2.3, 2.4],
                         lr_ceiling=0.1, fall=0.05, noise=0.01, steps_per_decade=14.0, flat_decades=0.4,
                         doubts=["no clear fall (the loss fell 5.0x its batch noise)"], read_as="rmsprop")
    print_range_test(RangeTest([result], 0.0), seconds=1.0)
    out = capsys.readouterr().out
    assert "Exploration ceiling   0.1 (PBT may explore learning rates up to it)" in out
    assert "Read for              rmsprop: the range x3.5 that of SGD with momentum (calibrated)" in out
    assert "Curve                 fell 0.05 (5x its batch noise 0.01), 14 steps a decade, near its lowest over 0.4 decades" in out
    warnings = [line for line in out.splitlines() if line.startswith("Warning:")]
    assert warnings == ["Warning: the curve is ambiguous: no clear fall (the loss fell 5.0x its batch noise); "
                        "look at lr_range.png before trusting the range"]
