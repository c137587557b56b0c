"""The search space: bounds for lr, momentum and weight decay, and exploration that respects them.

The same bounds seed the population and wall in its exploration. `explore` is a pure function
(modelled on Ray's `_explore`): it perturbs or resamples each hyperparameter, clips the result to
its bounds, and returns what it changed, so it is testable without Ray.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ray import tune

from pbt.config import ExperimentConfig
from pbt.lr_range import RangeSweep

DEFAULT_WEIGHT_DECAY = (1e-5, 1e-3)


@dataclass(frozen=True)
class Bound:
    """One hyperparameter's interval; `log` means sampled log-uniformly (lr, weight decay)."""

    low: float
    high: float
    log: bool

    def sample(self, rng: random.Random) -> float:
        if self.low == self.high:
            return self.low
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def clip(self, value: float) -> float:
        return min(max(value, self.low), self.high)

    def domain(self) -> tune.search.sample.Domain:
        """The Ray Tune distribution for the initial population."""
        if self.low == self.high:
            return tune.choice([self.low])
        return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)


@dataclass(frozen=True)
class SearchSpace:
    lr: Bound
    momentum: Bound
    weight_decay: Bound

    @property
    def bounds(self) -> dict[str, Bound]:
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def to_dict(self) -> dict[str, dict[str, float | bool]]:
        return {name: {"low": b.low, "high": b.high, "log": b.log} for name, b in self.bounds.items()}


def search_space(config: ExperimentConfig, sweep: RangeSweep | None) -> SearchSpace:
    """Bounds from the config where given, else from the LR range test (`sweep`)."""
    search = config.search
    if search.lr is not None:
        lr = Bound(search.lr.low, search.lr.high, log=True)
    elif sweep is not None:
        lr = Bound(sweep.chosen.lr_low, sweep.chosen.lr_high, log=True)
    else:
        raise ValueError("no learning-rate range: give search.lr or run the range test")
    if search.weight_decay is not None:
        weight_decay = Bound(search.weight_decay.low, search.weight_decay.high, log=True)
    elif sweep is not None and len(sweep.results) > 1 and sweep.chosen_weight_decay > 0:
        # Around the weight-decay test's choice, a factor of 3 either way.
        weight_decay = Bound(sweep.chosen_weight_decay / 3, sweep.chosen_weight_decay * 3, log=True)
    else:
        weight_decay = Bound(*DEFAULT_WEIGHT_DECAY, log=True)
    return SearchSpace(lr, Bound(search.momentum.low, search.momentum.high, log=False), weight_decay)


def explore(
    values: dict[str, float],
    space: SearchSpace,
    rng: random.Random,
    resample_probability: float = 0.25,
    factors: tuple[float, ...] = (0.8, 1.2),
) -> tuple[dict[str, float], dict[str, str]]:
    """Perturb (x factor) or resample each hyperparameter, clipped to its bounds.

    Returns the new values and, per hyperparameter, how it changed: `lr 0.02 -> 0.024 (x1.2)`.
    Keys of `values` that are not hyperparameters are passed through untouched.
    """
    new = dict(values)
    changes = {}
    for name, bound in space.bounds.items():
        old = values[name]
        if rng.random() < resample_probability:
            value, how = bound.sample(rng), "resampled"
        else:
            factor = rng.choice(factors)
            value, how = old * factor, f"x{factor:g}"
        clipped = bound.clip(value)
        if clipped != value:
            how += f", clipped to {'high' if clipped == bound.high else 'low'} bound"
        new[name] = clipped
        changes[name] = f"{name} {old:.4g} -> {clipped:.4g} ({how})"
    return new, changes
