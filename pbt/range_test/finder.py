"""The LR range test (Smith 2015/2017): a learning-rate range from one short sweep of training.

The learning rate grows exponentially from `lr_min` to `lr_max`, one step per batch, while the
training loss is recorded; the sweep stops when the loss turns non-finite or climbs back far above
its best. The analysis smooths the curve robustly (running median, then running mean, both
centred) and reads three features off it: where the loss falls fastest against log10(lr), where
it is lowest, and where it diverges (climbs back to its starting level).

The sweep lasts one epoch; an epoch shorter than `min_steps` is extended over fresh epochs, and
`max_steps` sets any length. Without `max_steps`, a sweep whose loss never fell clearly is run
again twice as long, twice at most (`LENGTHENINGS`). A sweep that short sees every feature at a
higher learning rate than a full training run would: there is too little time left to profit from
a small rate. The range for training at a constant rate is therefore read below a basis between
the divergence point and the minimum (`reading_basis`): `[basis / low_divisor, basis /
high_divisor]` (20 and 10), shifted per optimizer (`RANGE_SHIFT`), all fitted on a calibration
suite of several model families (see BENCHMARKS.md). The suggested point is the geometric middle
of the range; `training_ceiling` says how far above it exploration may go.

The caller's trainer is left exactly as it was: weights, optimizer state and RNG streams are
snapshotted before the sweep and restored after it (fastai's LRFinder, Lightning's isolate_rng).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from pbt.config import ExperimentConfig, LRRangeConfig
from pbt.errors import PbtError
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer, pick_device
from pbt.trainer import Trainer, count_epoch_steps

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, float, float], None]  # (step, total steps, lr, loss)


@dataclass
class Curve:
    """What one sweep recorded: the learning rate and raw training loss of every step."""

    lrs: list[float]
    losses: list[float]
    stop_reason: str
    planned_steps: int = 0  # the sweep's length had it not stopped early
    epoch_steps: int = 0  # steps in one epoch of the trainer
    optimizer: str = ""  # the class of the trainer's optimizer, lower case (`sgd`, `adam`, `nadam`, ...)


@dataclass
class CurveReading:
    """The features of a smoothed loss-vs-lr curve, and how clearly the curve shows them.

    When the smoothed loss never climbs back to its start, `divergence_lr` is the last learning rate
    of the curve: where the sweep stopped (a rising or non-finite loss) or `lr_max`.
    """

    steepest_lr: float  # the loss falls fastest against log10(lr), once it has begun to fall
    min_loss_lr: float  # the smoothed loss is lowest
    divergence_lr: float  # the smoothed loss is back at its starting level (median of the first 10%)
    diverged: bool  # False: the sweep ended at lr_max before the loss climbed back
    smoothed: np.ndarray
    fall: float = 0.0  # from the starting level down to the lowest smoothed loss
    noise: float = 0.0  # the batch-to-batch noise (median absolute step-to-step change)
    steps_per_decade: float = 0.0
    flat_decades: float = 0.0  # decades of lr over which the smoothed loss stays near its lowest

    def doubts(self) -> list[str]:
        """What makes the curve ambiguous, each in a few words (none: the curve reads clearly)."""
        found = []
        if self.fall < CLEAR_FALL * self.noise:
            found.append(f"no clear fall (the loss fell {self.fall / max(self.noise, 1e-12):.1f}x its batch noise)")
        if self.flat_decades > FLAT_MINIMUM_DECADES:
            found.append(f"a flat minimum ({self.flat_decades:.1f} decades within reach of the lowest loss)")
        if self.steps_per_decade < MIN_STEPS_PER_DECADE:
            found.append(f"too few steps per decade ({self.steps_per_decade:.1f}; raise lr_range.min_steps)")
        return found


# When `CurveReading.doubts` speaks: a fall under this many times the batch noise (a fall under 3x
# is refused outright), a near-minimum wider than this many decades, fewer steps than this per decade.
CLEAR_FALL = 10.0
FLAT_MINIMUM_DECADES = 1.5
MIN_STEPS_PER_DECADE = 8.0


@dataclass
class RangeResult:
    """A learning-rate range for training, read off one (possibly median-of-seeds) loss curve."""

    lr_low: float
    lr_high: float
    suggestion: float
    steepest_lr: float
    min_loss_lr: float
    divergence_lr: float
    stop_reason: str
    weight_decay: float
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    seeds: int = 1
    planned_steps: int = 0  # the sweep's length had it not stopped early
    epoch_steps: int = 0  # steps in one epoch of the trainer
    lr_ceiling: float = 0.0  # how far above lr_high exploration may go: what the curve shows is safe
    read_as: str = ""  # the optimizer whose shift the rule applied (`optimizer_key`); "" before it was recorded
    fall: float = 0.0
    noise: float = 0.0
    steps_per_decade: float = 0.0
    flat_decades: float = 0.0
    doubts: list[str] = field(default_factory=list)
    # Each seed's own curve read by the same rule (`seed_ranges`): {seed, lr_low, lr_high, suggestion},
    # or {seed, unread: why} where that curve alone reads no range; [] in a result saved before them.
    seed_ranges: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> RangeResult:
        """A result as `to_dict` wrote it, by this version or an older one (its missing keys take their
        defaults; keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in saved.items() if name in known})

    def own_highs(self) -> dict[int, float]:
        """The `lr_high` each seed's own curve reads, by seed (the seeds whose curve reads a range)."""
        return {own["seed"]: own["lr_high"] for own in self.seed_ranges if "lr_high" in own}

    def length_text(self) -> str:
        """The sweep's planned length, e.g. `one epoch (100 steps)` or `2.7 epochs (100 steps of 37 an epoch)`."""
        if not self.epoch_steps:  # a result saved before the sweep's length was recorded
            return f"{len(self.lrs)} steps"
        if self.planned_steps == self.epoch_steps:
            return f"one epoch ({self.planned_steps} steps)"
        epochs = self.planned_steps / self.epoch_steps
        return f"{epochs:.2g} epochs ({self.planned_steps} steps of {self.epoch_steps} an epoch)"


@dataclass
class RangeTest:
    """One range per weight decay, and the weight decay chosen among them (Smith 2018)."""

    results: list[RangeResult]
    chosen_weight_decay: float
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> RangeResult:
        return next(r for r in self.results if r.weight_decay == self.chosen_weight_decay)

    def to_dict(self) -> dict:
        chosen = self.chosen
        return {
            "lr_low": chosen.lr_low,
            "lr_high": chosen.lr_high,
            "suggestion": chosen.suggestion,
            "weight_decay": self.chosen_weight_decay,
            "seed_ranges": chosen.seed_ranges,
            "ranges": [r.to_dict() for r in self.results],
            "failures": self.failures,
        }

    @classmethod
    def from_dict(cls, saved: dict) -> RangeTest:
        """A range test as `to_dict` (and `lr_range.json`) holds it, by this version or an older one."""
        results = [RangeResult.from_dict(r) for r in saved["ranges"]]
        return cls(results, saved["weight_decay"], dict(saved.get("failures", {})))


def lr_schedule(lr_min: float, lr_max: float, steps: int) -> np.ndarray:
    """Exponentially spaced learning rates, one per step, from `lr_min` to `lr_max` inclusive."""
    return np.geomspace(lr_min, lr_max, steps)


def sweep_length(trainer: Trainer, max_steps: int | None, min_steps: int = 100) -> tuple[int, int]:
    """`(steps of the sweep, steps of one epoch)`: `max_steps` if given, else one epoch but at least
    `min_steps` (a short epoch is extended over fresh epochs)."""
    per_epoch = count_epoch_steps(trainer)
    if per_epoch == 0:
        raise PbtError("the trainer's batches() yielded no batch")
    steps = max_steps if max_steps is not None else max(per_epoch, min_steps)
    return steps, per_epoch


def record_curve(
    trainer: Trainer,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    max_steps: int | None = None,
    momentum: float | None = 0.9,
    weight_decay: float = 0.0,
    diverge_factor: float = 1.0,
    smooth_window: int = 5,
    on_step: StepCallback | None = None,
    min_steps: int = 100,
) -> Curve:
    """Run the exponential sweep on `trainer` and restore its state afterwards."""
    steps, epoch_steps = sweep_length(trainer, max_steps, min_steps)
    lrs = lr_schedule(lr_min, lr_max, steps)
    with isolated(trainer):
        set_hyperparams(trainer.optimizer, momentum=momentum, weight_decay=weight_decay)
        curve = _sweep(trainer, lrs, diverge_factor, smooth_window, on_step)
    curve.planned_steps, curve.epoch_steps = steps, epoch_steps
    curve.optimizer = type(trainer.optimizer).__name__.lower()
    return curve


def _sweep(
    trainer: Trainer, lrs: np.ndarray, diverge_factor: float, window: int, on_step: StepCallback | None
) -> Curve:
    losses: list[float] = []
    watch = DivergenceWatch(diverge_factor, window, warmup=max(2 * window, len(lrs) // 10))
    batches = _batches_forever(trainer)
    for step, lr in enumerate(lrs):
        set_hyperparams(trainer.optimizer, lr=float(lr))
        loss = float(trainer.train_step(next(batches)))
        losses.append(loss)
        if on_step is not None:
            on_step(step + 1, len(lrs), float(lr), loss)
        if not math.isfinite(loss):
            return Curve(lrs[: step + 1].tolist(), losses, "non-finite loss")
        if watch.diverged(loss):
            return Curve(lrs[: step + 1].tolist(), losses, "loss diverged")
    return Curve(lrs.tolist(), losses, "reached lr_max")


def _batches_forever(trainer: Trainer) -> Iterator:
    # A sweep longer than an epoch goes on over fresh epochs.
    while True:
        empty = True
        for batch in trainer.batches():
            empty = False
            yield batch
        if empty:
            raise PbtError("the trainer's batches() yielded no batch")


class DivergenceWatch:
    """Flags a loss curve that has risen far above its best.

    "Far" is `factor` times the larger of the drop from the starting loss to the best one and
    five times the batch-to-batch noise (median absolute deviation). It works for negative
    losses and depends on neither the scale nor the offset of the loss. The running median of the
    last `window` losses is compared, so one noisy batch cannot stop the test, and nothing is
    flagged during `warmup` steps.
    """

    def __init__(self, factor: float, window: int, warmup: int) -> None:
        self.factor, self.window, self.warmup = factor, window, warmup
        self.losses: list[float] = []
        self.start: float | None = None
        self.best = math.inf

    def diverged(self, loss: float) -> bool:
        self.losses.append(loss)
        level = float(np.median(self.losses[-self.window :]))
        if len(self.losses) == self.window:
            self.start = level
        self.best = min(self.best, level)
        if self.start is None or len(self.losses) <= self.warmup:
            return False
        noise = float(np.median(np.abs(np.diff(self.losses))))
        scale = max(self.start - self.best, 5.0 * noise, 1e-12)
        return level > self.best + self.factor * scale


@contextlib.contextmanager
def isolated(trainer: Trainer) -> Iterator[None]:
    """Run a block on `trainer` and then put back its weights, optimizer state and RNG streams."""
    state = copy.deepcopy(trainer.state_dict())
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        trainer.load_state_dict(state)
        random.setstate(py_state)
        np.random.set_state(np_state)


def smooth(losses: np.ndarray, window: int) -> np.ndarray:
    """A running median (robust to spikes) followed by a running mean, both centred: no lag."""
    values = np.asarray(losses, dtype=float)
    if window <= 1 or len(values) < 3:
        return values.copy()
    window = min(window, len(values) - (1 - len(values) % 2))  # odd and not longer than the curve
    half = window // 2
    medians = np.median(_windows(values, half), axis=1)
    return np.mean(_windows(medians, half), axis=1)


def _windows(values: np.ndarray, half: int) -> np.ndarray:
    padded = np.pad(values, half, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)


class LossNeverFell(PbtError):
    """A sweep's loss never fell beyond its batch-to-batch noise: no range can be read off it."""


def read_curve(lrs: list[float] | np.ndarray, losses: list[float] | np.ndarray, smooth_window: int = 5) -> CurveReading:
    """Find the steepest descent, the minimum and the divergence point of a loss-vs-lr curve.

    Slopes are taken against log10(lr), so the result does not depend on how many steps the
    sweep had per decade. The losses must be finite. Raises `PbtError` when the loss never falls.
    """
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if len(losses) < 5 or not np.all(np.isfinite(losses)):
        raise PbtError(f"lr_range: need at least 5 finite losses to analyse, but got {np.isfinite(losses).sum()}")
    smoothed = smooth(losses, smooth_window)
    lowest = int(np.argmin(smoothed))
    slopes = np.gradient(smoothed, np.log10(lrs))
    start = float(np.median(losses[: max(smooth_window, len(losses) // 10)]))
    steepest = _steepest_fall(smoothed, slopes, lowest, smooth_window)
    # A dip no deeper than the batch-to-batch noise is not a fall: refuse rather than guess.
    noise = float(np.median(np.abs(np.diff(losses))))
    fall = start - float(smoothed[lowest])
    if lowest == 0 or slopes[steepest] >= 0 or fall <= 3 * noise:
        raise LossNeverFell(
            f"lr_range: the training loss never fell clearly (from {start:.4g} to at best {smoothed[lowest]:.4g}, "
            f"batch noise {noise:.2g})"
        )
    risen = np.flatnonzero(smoothed[lowest:] >= start)
    diverged = risen.size > 0
    divergence = lowest + int(risen[0]) if diverged else len(lrs) - 1
    decades = math.log10(lrs[-1] / lrs[0]) if lrs[-1] > lrs[0] else 0.0
    return CurveReading(
        float(lrs[steepest]), float(lrs[lowest]), float(lrs[divergence]), diverged, smoothed,
        fall=fall, noise=noise, steps_per_decade=len(lrs) / max(decades, 1e-12),
        flat_decades=_flat_decades(lrs, smoothed, lowest, max(noise, 0.1 * fall)),
    )


def _steepest_fall(smoothed: np.ndarray, slopes: np.ndarray, lowest: int, window: int) -> int:
    """Where the loss falls fastest on its way down to the minimum.

    Searched only after the last point before the minimum that sits at or above the curve's
    typical level before it (the median: mostly the plateau), and not within the smoothing window
    of the first point (padded there, so its slope is made up): a noisy plateau, or first batches
    far above the others, would otherwise "fall fastest" at the sweep's first rates.
    """
    level = float(np.median(smoothed[: lowest + 1]))
    above = np.flatnonzero(smoothed[:lowest] >= level)
    first = min(max(int(above[-1]) if above.size else 0, window // 2 + 1), lowest)
    return first + int(np.argmin(slopes[first: lowest + 1]))


def _flat_decades(lrs: np.ndarray, smoothed: np.ndarray, lowest: int, tolerance: float) -> float:
    """The decades of lr around the minimum over which the smoothed loss stays within `tolerance` of it."""
    near = smoothed <= smoothed[lowest] + tolerance
    left = right = lowest
    while left > 0 and near[left - 1]:
        left -= 1
    while right < len(lrs) - 1 and near[right + 1]:
        right += 1
    return math.log10(lrs[right] / lrs[left])


def optimizer_key(optimizer: str | None, momentum: float) -> str:
    """The name the reading rule's shifts go by: SGD with momentum reads unlike plain SGD.
    `optimizer` is a `trainer.optimizer` setting or a torch optimizer's class name, any case."""
    name = (optimizer or "").lower()
    return "sgd+momentum" if name == "sgd" and momentum > 0 else name


def shift_text(read_as: str) -> str:
    """How the rule read the curve for an optimizer, in words: its calibrated shift, or none."""
    if read_as == "sgd+momentum":
        return "SGD with momentum (the rule's reference)"
    if read_as in RANGE_SHIFT:
        return f"{read_as}: the range x{RANGE_SHIFT[read_as]:g} that of SGD with momentum (calibrated)"
    return f"{read_as or 'an unnamed optimizer'}: not calibrated, read as SGD with momentum"


def reading_basis(reading: CurveReading | RangeResult) -> float:
    """The rate the range is read off: between the divergence point and the loss minimum, nearer
    the divergence point (`BASIS_WEIGHT`), the combination that fitted the calibration suite best."""
    return reading.divergence_lr**BASIS_WEIGHT * reading.min_loss_lr ** (1 - BASIS_WEIGHT)


def training_range(
    reading: CurveReading, low_divisor: float = 20.0, high_divisor: float = 10.0, shift: float = 1.0
) -> tuple[float, float, float]:
    """`(lr_low, lr_high, suggestion)` for training at a constant rate: the basis divided by the
    divisors, `shift` times higher for optimizers that train well closer to where their sweep diverges."""
    basis = reading_basis(reading) * shift
    low, high = basis / low_divisor, basis / high_divisor
    return low, high, math.sqrt(low * high)


def training_ceiling(reading: CurveReading, high: float, ceiling_divisor: float, shift: float = 1.0) -> float:
    """How high exploration may raise the lr: the (shifted) basis divided by `ceiling_divisor`,
    never above the divergence point and never below the range's own top `high`."""
    return max(high, min(reading.divergence_lr, reading_basis(reading) * shift / ceiling_divisor))


def read_range(reading: CurveReading, settings: LRRangeConfig, optimizer: str) -> tuple[float, float, float, float]:
    """`(lr_low, lr_high, suggestion, ceiling)` by the rule as configured, for an optimizer named
    as `optimizer_key` names it."""
    shift = RANGE_SHIFT.get(optimizer, 1.0)
    low, high, point = training_range(reading, settings.low_divisor, settings.high_divisor, shift)
    return low, high, point, training_ceiling(reading, high, settings.ceiling_divisor, shift)


def median_curve(curves: list[Curve]) -> Curve:
    """The step-wise median of several sweeps with the same schedule (different seeds).

    The median runs as long as at least half of the sweeps are still going, so one seed that
    diverged early does not cut the others short, nor does one lucky seed stretch the curve.
    """
    if len(curves) == 1:
        return curves[0]
    length = max(len(c.losses) for c in curves)
    keep = sum(2 * sum(len(c.losses) > i for c in curves) >= len(curves) for i in range(length))
    medians = [_median_at(curves, i) for i in range(keep)]
    lrs = max(curves, key=lambda c: len(c.lrs)).lrs[:keep]
    return Curve(lrs, medians, " / ".join(sorted({c.stop_reason for c in curves})), curves[0].planned_steps,
                 curves[0].epoch_steps, curves[0].optimizer)


def _median_at(curves: list[Curve], step: int) -> float:
    # A non-finite loss counts as worse than any finite one, so it can still lose the median.
    values = [c.losses[step] if math.isfinite(c.losses[step]) else math.inf for c in curves if len(c.losses) > step]
    return float(np.median(values))


# The reading rule, fitted on the calibration suite (`scripts/calibrate_range.py`, BENCHMARKS.md):
# 5 model families x 6 optimizers x 2 batch sizes, against the bands of rates that reach a
# target accuracy in fixed-rate training. The basis is divergence^BASIS_WEIGHT x minimum^(1 - BASIS_WEIGHT);
# the range is [basis / lr_range.low_divisor, basis / lr_range.high_divisor] for SGD with momentum,
# `RANGE_SHIFT` times that for the others (per optimizer, never per model; AdamW reads as Adam).
# Plain SGD's sweep (momentum 0) and the adaptive optimizers' train well closer to where the
# sweep diverges: they divide each step by gradient statistics that a loss spike inflates within
# a few steps, so a constant rate recovers from the instability that ends a rising sweep.
BASIS_WEIGHT = 0.75
RANGE_SHIFT = {"sgd": 2.5, "adam": 1.1, "adamw": 1.1, "adagrad": 2.5, "adadelta": 10.0, "rmsprop": 3.5}

# How often a sweep whose loss never fell clearly is run again, twice as long each time. Without
# momentum (Adagrad, Adadelta, plain SGD) a step goes about a tenth as far as with momentum 0.9, so
# the few steps a one-epoch sweep spends at the rates that make progress (some 15 a decade on
# MNIST-1D) may not lower the loss beyond its noise: Adagrad's did not in 100 steps, and did in 200.
LENGTHENINGS = 2


def seed_curve(
    config: ExperimentConfig, weight_decay: float, steps: int | None, seed: int, on_step: StepCallback | None = None
) -> Curve:
    """One sweep of `steps` (None: the default length) by a trainer built with `seed`."""
    settings = config.lr_range
    trainer = build_trainer(config, device=pick_device(config.resources.gpu > 0), seed=seed)
    return record_curve(
        trainer,
        lr_min=settings.lr_min,
        lr_max=settings.lr_max,
        max_steps=steps,
        momentum=settings.momentum,
        weight_decay=weight_decay,
        diverge_factor=settings.diverge_factor,
        smooth_window=settings.smooth_window,
        on_step=on_step,
        min_steps=settings.min_steps,
    )


def _seed_sweeps(
    config: ExperimentConfig, weight_decay: float, steps: int | None, on_step: StepCallback | None
) -> dict[int, Curve]:
    """`lr_range.seeds` sweeps, by the seeds `seed`, `seed + 1`, ... of the experiment."""
    seeds = range(config.seed, config.seed + config.lr_range.seeds)
    return {seed: seed_curve(config, weight_decay, steps, seed, on_step) for seed in seeds}


def seed_ranges(
    curves: dict[int, Curve], settings: LRRangeConfig, optimizer: str, weight_decay: float = 0.0
) -> list[dict]:
    """Each seed's own curve read by the rule that reads the median curve (`read_range`, for
    `optimizer` as `optimizer_key` names it): how far the seeds alone would put the range apart.
    A curve that reads no range alone says why (`unread`) instead."""
    found: list[dict] = []
    for seed, curve in curves.items():
        try:
            lrs, losses = _finite_points(curve, weight_decay)
            reading = read_curve(lrs, losses, settings.smooth_window)
        except PbtError as err:
            found.append({"seed": seed, "unread": str(err).removeprefix("lr_range: ")})
            continue
        low, high, point, _ = read_range(reading, settings, optimizer)
        found.append({"seed": seed, "lr_low": low, "lr_high": high, "suggestion": point})
    return found


def _finite_points(curve: Curve, weight_decay: float) -> tuple[list[float], list[float]]:
    # The curve ends at the first non-finite loss; that point has nothing to plot or analyse.
    points = [(lr, loss) for lr, loss in zip(curve.lrs, curve.losses) if math.isfinite(loss)]
    if len(points) < 5:
        raise PbtError(
            f"lr_range: the loss was non-finite after {len(points)} steps at weight decay {weight_decay:g}; "
            "lower lr_range.lr_min"
        )
    lrs, losses = map(list, zip(*points))
    return lrs, losses


def range_for_weight_decay(config: ExperimentConfig, weight_decay: float, on_step: StepCallback | None = None) -> RangeResult:
    """Run `lr_range.seeds` sweeps at one weight decay and analyse their median curve (and, to say
    how far they spread, each seed's own curve: `seed_ranges`).

    A curve whose loss never fell clearly is swept again, twice as long, up to `LENGTHENINGS` times
    (never when `lr_range.max_steps` sets the length).
    """
    settings = config.lr_range
    steps = settings.max_steps
    lengthenings = 0 if settings.max_steps is not None else LENGTHENINGS
    for attempt in range(lengthenings + 1):
        curves = _seed_sweeps(config, weight_decay, steps, on_step)
        curve = median_curve(list(curves.values()))
        lrs, losses = _finite_points(curve, weight_decay)
        try:
            reading = read_curve(lrs, losses, settings.smooth_window)
            break
        except LossNeverFell as err:
            if attempt == lengthenings:
                raise PbtError(
                    f"{err} in a sweep of {curve.planned_steps} steps; check the model, widen lr_range.lr_min and "
                    "lr_range.lr_max, lengthen the sweep with lr_range.max_steps, or give the range as search.lr"
                ) from None
            steps = 2 * curve.planned_steps
            log.info("the loss never fell clearly in %d steps; sweeping again over %d", curve.planned_steps, steps)
    if not reading.diverged and curve.stop_reason == "reached lr_max":
        log.warning(
            "the loss never diverged up to lr_range.lr_max=%g; the range is read off lr_max and may be too low. "
            "Raise lr_range.lr_max.", settings.lr_max
        )
    # The optimizer the trainer really built: a trainer of the user's own may ignore `trainer.optimizer`.
    read_as = optimizer_key(curve.optimizer, settings.momentum)
    low, high, point, ceiling = read_range(reading, settings, read_as)
    return RangeResult(
        lr_low=low,
        lr_high=high,
        suggestion=point,
        lr_ceiling=ceiling,
        read_as=read_as,
        fall=reading.fall,
        noise=reading.noise,
        steps_per_decade=reading.steps_per_decade,
        flat_decades=reading.flat_decades,
        doubts=reading.doubts(),
        steepest_lr=reading.steepest_lr,
        min_loss_lr=reading.min_loss_lr,
        divergence_lr=reading.divergence_lr,
        stop_reason=curve.stop_reason,
        weight_decay=weight_decay,
        lrs=lrs,
        losses=losses,
        smoothed=reading.smoothed.tolist(),
        seeds=settings.seeds,
        planned_steps=curve.planned_steps,
        epoch_steps=curve.epoch_steps,
        seed_ranges=seed_ranges(curves, settings, read_as, weight_decay),
    )


def find_lr_range(
    config: ExperimentConfig,
    on_step: StepCallback | None = None,
    on_result: Callable[[int, int, float], None] | None = None,
) -> RangeTest:
    """The range test as configured: one weight decay in this process, several in parallel Ray tasks.

    `on_step` reports each step of an in-process test; `on_result(done, total, weight_decay)`
    reports each finished weight decay.
    """
    decays = config.lr_range.weight_decays
    if len(decays) == 1:
        results = {decays[0]: _try_range(config, decays[0], on_step)}
        if on_result:
            on_result(1, 1, decays[0])
    else:
        results = _parallel_ranges(config, decays, on_result)
    failures = {str(wd): outcome for wd, outcome in results.items() if isinstance(outcome, str)}
    found = [outcome for outcome in results.values() if isinstance(outcome, RangeResult)]
    if not found:
        raise PbtError(next(iter(failures.values())))
    return RangeTest(found, choose_weight_decay(found), failures)


def choose_weight_decay(results: list[RangeResult], tolerance: float = 2.0) -> float:
    """The largest weight decay whose `lr_high` is within `tolerance`x of the highest (Smith 2018)."""
    best_high = max(r.lr_high for r in results)
    return max(r.weight_decay for r in results if r.lr_high * tolerance >= best_high)


def _try_range(config: ExperimentConfig, weight_decay: float, on_step: StepCallback | None = None) -> RangeResult | str:
    # A weight decay whose curve never falls is a finding of the sweep, not a crash.
    try:
        return range_for_weight_decay(config, weight_decay, on_step)
    except PbtError as err:
        return str(err)


def _parallel_ranges(
    config: ExperimentConfig, decays: list[float], on_result: Callable[[int, int, float], None] | None
) -> dict[float, RangeResult | str]:
    # Here, not above: `import pbt` (which names this module's results) need not load Ray.
    import ray

    from pbt.cluster.session import ensure_ray

    ensure_ray()
    task = ray.remote(_try_range).options(num_cpus=config.resources.cpu, num_gpus=config.resources.gpu)
    pending = {task.remote(config, wd): wd for wd in decays}
    results: dict[float, RangeResult | str] = {}
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        wd = pending.pop(ready)
        results[wd] = ray.get(ready)
        if on_result:
            on_result(len(results), len(decays), wd)
    return {wd: results[wd] for wd in decays}
