"""The grid-search baseline: which points it trains, and how they are named.

By default the grid spends what the population spends: as many points as members, each trained
for the same epochs. Learning rate gets most of the points (it matters most); momentum and weight
decay get the two ends of their bounds once there are enough points to afford it. An optimizer
without momentum (Adagrad, Adadelta) trains its points at momentum 0 only: the budget a momentum
axis would take goes to learning rates, and a grid over several optimizers has no duplicate points.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from pbt.config import ExperimentConfig
from pbt.optim import has_momentum
from pbt.search.space import SearchSpace, momentum_bound


def grid_axes(config: ExperimentConfig, space: SearchSpace) -> dict[str, list[Any]]:
    """The values of each axis: as configured, or derived from the search space."""
    grid, size = config.grid, config.population.size
    axes: dict[str, list[Any]] = {}
    if config.grid.optimizer:
        axes["optimizer"] = list(grid.optimizer)
    free = max(1, size // len(axes.get("optimizer", [None])))
    # Two values per secondary axis when the budget allows at least 4 learning rates beside them.
    momentum = _momentum_values(config, space, 2 if free >= 8 else 1)
    weight_decay = grid.weight_decay or _ends(space.weight_decay.low, space.weight_decay.high, 2 if free >= 4 else 1, log=True)
    lr_points = max(1, free // (len(momentum) * len(weight_decay)))
    # The range widened `lr_span` each way, and up to the ceiling PBT may explore to: the same space.
    top = max(space.lr.start_top * grid.lr_span, space.lr.high)
    lr = grid.lr or list(np.geomspace(space.lr.start / grid.lr_span, top, lr_points))
    axes.update(lr=[float(v) for v in lr], momentum=[float(v) for v in momentum],
                weight_decay=[float(v) for v in weight_decay])
    return axes


def _momentum_values(config: ExperimentConfig, space: SearchSpace, count: int) -> list[float]:
    """Configured, or the ends (or middle) of the momentum band; only 0 when no optimizer of the
    grid has momentum."""
    optimizers = config.grid.optimizer or [config.trainer.get("optimizer")]
    if not any(has_momentum(name) for name in optimizers):
        return [0.0]
    # The space has none when the trainer's own optimizer lacks momentum but another of the grid's has it.
    bound = space.momentum or momentum_bound(config.search)
    return config.grid.momentum or _ends(bound.low, bound.high, count, log=False)


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, numbered: `{"member": 0, "lr": ..., "momentum": ..., "weight_decay": ...}`.

    A point of an optimizer without momentum trains at momentum 0 (the value it reads back), so the
    combinations that differ only in momentum are one point for it.
    """
    names = list(axes)
    points: list[dict[str, Any]] = []
    for values in itertools.product(*(axes[name] for name in names)):
        point = dict(zip(names, values))
        if not has_momentum(point.get("optimizer")):
            point["momentum"] = 0.0
        if point not in points:
            points.append(point)
    return [{"member": index, **point} for index, point in enumerate(points)]


def point_label(config: dict[str, Any]) -> str:
    """A grid point's name in files and TensorBoard: `lr=0.0139 momentum=0.85 wd=1e-05` (momentum 0,
    no momentum, left out). Rates to 3 significant digits, as every line pbt prints shows them."""
    momentum = f" momentum={config['momentum']:.3g}" if config["momentum"] else ""
    label = f"lr={config['lr']:.3g}{momentum} wd={config['weight_decay']:.2g}"
    return f"{config['optimizer']} {label}" if "optimizer" in config else label


def _ends(low: float, high: float, count: int, log: bool) -> list[float]:
    """`count` (1 or 2) values spanning [low, high]: both ends, or the middle."""
    if count >= 2 and high > low:
        return [low, high]
    return [math.sqrt(low * high) if log else (low + high) / 2]
