"""The search space: bounds for lr, momentum and weight decay, and exploration that respects them.

The same bounds seed the population and wall in its exploration. `explore` is a pure function
(modelled on Ray's `_explore`): it perturbs or resamples each hyperparameter, clips the result to
its bounds, and returns what it changed, so it is testable without Ray.

An optimizer without momentum (Adagrad, Adadelta) has no momentum axis: nothing searches, explores
or shows it. Its members still carry `momentum: 0` (`SearchSpace.bounds`), the value the optimizer
reads back, so every part that sets or records all of `HYPERPARAMS` works unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from ray import tune

from pbt.config import ExperimentConfig, SearchConfig
from pbt.optim import has_momentum
from pbt.range_test.finder import RangeTest

DEFAULT_WEIGHT_DECAY = (1e-5, 1e-3)


@dataclass(frozen=True)
class Bound:
    """One hyperparameter's interval; `log` means sampled log-uniformly (lr, weight decay).

    `complement` perturbs 1 - value instead of the value: momentum lives just below 1, where
    x0.8 or x1.2 would throw 0.9 to 0.72 or 1.08, far out of any sensible band; scaling the
    distance from 1 moves 0.9 to 0.92 or 0.88 (the momentum's averaging horizon changes by the factor).
    """

    low: float
    high: float
    log: bool
    complement: bool = False
    start_low: float | None = None  # the population starts (and resamples) in [start_low, start_high]
    start_high: float | None = None

    @property
    def start(self) -> float:
        """The low end of where the population starts; exploration may go down to `low`."""
        return self.low if self.start_low is None else self.start_low

    @property
    def start_top(self) -> float:
        """The high end of where the population starts; exploration may go up to `high`."""
        return self.high if self.start_high is None else self.start_high

    def perturb(self, value: float, factor: float) -> float:
        return 1 - (1 - value) * factor if self.complement else value * factor

    def sample(self, rng: random.Random) -> float:
        low, high = self.start, self.start_top
        if low == high:
            return low
        if self.log:
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)

    def clip(self, value: float) -> float:
        return min(max(value, self.low), self.high)

    def domain(self) -> tune.search.sample.Domain:
        """The Ray Tune distribution for the initial population (and for resampling)."""
        low, high = self.start, self.start_top
        if low == high:
            return tune.choice([high])
        return tune.loguniform(low, high) if self.log else tune.uniform(low, high)


NO_MOMENTUM = Bound(0.0, 0.0, log=False)  # what members of an optimizer without momentum carry


@dataclass(frozen=True)
class SearchSpace:
    lr: Bound
    momentum: Bound | None  # None: the optimizer has no momentum (Adagrad, Adadelta)
    weight_decay: Bound

    @property
    def searched(self) -> dict[str, Bound]:
        """The hyperparameters that PBT explores, the grid spans and the space's printout shows."""
        return {name: bound for name, bound in self.bounds.items() if name != "momentum" or self.momentum is not None}

    @property
    def bounds(self) -> dict[str, Bound]:
        """Every hyperparameter a member's config holds: the searched ones, and momentum held at 0
        where the optimizer has none (trainers and packs set all of `HYPERPARAMS`)."""
        return {"lr": self.lr, "momentum": self.momentum or NO_MOMENTUM, "weight_decay": self.weight_decay}

    def population_start(self, span: float) -> SearchSpace:
        """The space PBT's members start in: the lr range widened `span` each way, never past the
        walls' ceiling (`search.lr_start_span`); the low wall goes down with it where needed."""
        if span == 1:
            return self
        lr = self.lr
        start, top = lr.start / span, min(lr.start_top * span, lr.high)
        wider = Bound(min(lr.low, start), lr.high, lr.log, lr.complement, start, None if top == lr.high else top)
        return dataclasses.replace(self, lr=wider)

    def to_dict(self) -> dict[str, dict[str, float | bool]]:
        return {name: {"low": b.low, "high": b.high, "start_low": b.start, "start_high": b.start_top, "log": b.log,
                       "complement": b.complement} for name, b in self.searched.items()}


def space_from_dict(bounds: dict[str, dict[str, Any]]) -> SearchSpace:
    """The inverse of `SearchSpace.to_dict` (a resumed experiment reads its space from job.json);
    no `momentum` entry: the optimizer has none."""
    def bound(d: dict[str, Any]) -> Bound:
        start, top = d.get("start_low", d["low"]), d.get("start_high", d["high"])  # absent: written before the walls moved
        return Bound(d["low"], d["high"], d["log"], d.get("complement", False), None if start == d["low"] else start,
                     None if top == d["high"] else top)

    values = {name: bound(values) for name, values in bounds.items()}
    return SearchSpace(values["lr"], values.get("momentum"), values["weight_decay"])


def momentum_bound(search: SearchConfig) -> Bound:
    """The configured momentum band, perturbed in 1 - momentum (see `Bound.complement`)."""
    return Bound(search.momentum.low, search.momentum.high, log=False, complement=True)


def search_space(config: ExperimentConfig, sweep: RangeTest | None) -> SearchSpace:
    """Bounds from the config where given, else from the LR range test (`sweep`)."""
    search = config.search
    if search.lr is not None:
        low, high = search.lr.low, search.lr.high
        ceiling = high  # no curve: nothing shows a higher rate is safe
    elif sweep is not None:
        low, high = sweep.chosen.lr_low, sweep.chosen.lr_high
        ceiling = max(high, sweep.chosen.lr_ceiling)  # a range saved before ceilings has none
    else:
        raise ValueError("no learning-rate range: give search.lr or run the range test")
    # Members start inside the range; exploration may anneal below it, and rise above it up to the
    # ceiling the range test read off the curve, so a range that is too careful does not hold the
    # population below the best rates.
    lr = Bound(low / search.lr_anneal_factor, ceiling, log=True, start_low=low, start_high=None if ceiling == high else high)
    if search.weight_decay is not None:
        weight_decay = Bound(search.weight_decay.low, search.weight_decay.high, log=True)
    elif sweep is not None and len(sweep.results) > 1 and sweep.chosen_weight_decay > 0:
        # Around the weight-decay test's choice, a factor of 3 either way.
        weight_decay = Bound(sweep.chosen_weight_decay / 3, sweep.chosen_weight_decay * 3, log=True)
    else:
        weight_decay = Bound(*DEFAULT_WEIGHT_DECAY, log=True)
    momentum = momentum_bound(search) if has_momentum(config.trainer.get("optimizer")) else None
    return SearchSpace(lr, momentum, weight_decay)


def explore(
    values: dict[str, float],
    space: SearchSpace,
    rng: random.Random,
    resample_probability: float = 0.25,
    factors: tuple[float, ...] = (0.8, 1.2),
) -> tuple[dict[str, float], dict[str, str]]:
    """Perturb (x factor; momentum: 1 - momentum x factor) or resample each hyperparameter, clipped to its bounds.

    Returns the new values and, per hyperparameter, how it changed: `lr 0.02 -> 0.024 (x1.2)`.
    Keys of `values` that the space does not search (`member`, an absent momentum) pass through untouched.
    """
    new = dict(values)
    changes = {}
    for name, bound in space.searched.items():
        old = values[name]
        if rng.random() < resample_probability:
            value, how = bound.sample(rng), "resampled"
        else:
            factor = rng.choice(factors)
            value, how = bound.perturb(old, factor), f"{'1-m ' if bound.complement else ''}x{factor:g}"
        clipped = bound.clip(value)
        if clipped != value:
            how += f", clipped to {'high' if clipped == bound.high else 'low'} bound"
        new[name] = clipped
        changes[name] = f"{name} {old:.4g} -> {clipped:.4g} ({how})"
    return new, changes
