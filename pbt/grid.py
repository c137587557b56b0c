"""The grid-search baseline: which points it trains, and how they are named.

By default the grid spends what the population spends: as many points as members, each trained
for the same epochs. Learning rate gets most of the points (it matters most); momentum and weight
decay get the two ends of their bounds once there are enough points to afford it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from pbt.config import ExperimentConfig
from pbt.space import SearchSpace

AXES_FILE = "axes.json"  # in the grid's folder: the values of each axis


def grid_axes(config: ExperimentConfig, space: SearchSpace) -> dict[str, list[Any]]:
    """The values of each axis: as configured, or derived from the search space."""
    grid, size = config.grid, config.population.size
    axes: dict[str, list[Any]] = {}
    if config.grid.optimizer:
        axes["optimizer"] = list(grid.optimizer)
    free = max(1, size // len(axes.get("optimizer", [None])))
    # Two values per secondary axis when the budget allows at least 4 learning rates beside them.
    momentum = grid.momentum or _ends(space.momentum.low, space.momentum.high, 2 if free >= 8 else 1, log=False)
    weight_decay = grid.weight_decay or _ends(space.weight_decay.low, space.weight_decay.high, 2 if free >= 4 else 1, log=True)
    lr_points = max(1, free // (len(momentum) * len(weight_decay)))
    lr = grid.lr or list(np.geomspace(space.lr.start / grid.lr_span, space.lr.high * grid.lr_span, lr_points))
    axes.update(lr=[float(v) for v in lr], momentum=[float(v) for v in momentum],
                weight_decay=[float(v) for v in weight_decay])
    return axes


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, numbered: `{"member": 0, "lr": ..., "momentum": ..., "weight_decay": ...}`."""
    names = list(axes)
    return [
        {"member": index, **dict(zip(names, values))}
        for index, values in enumerate(itertools.product(*(axes[name] for name in names)))
    ]


def point_label(config: dict[str, Any]) -> str:
    """A grid point's name in files and TensorBoard: `lr=0.0074 momentum=0.85 wd=1e-05`."""
    label = f"lr={config['lr']:.2g} momentum={config['momentum']:.2g} wd={config['weight_decay']:.1g}"
    return f"{config['optimizer']} {label}" if "optimizer" in config else label


def _ends(low: float, high: float, count: int, log: bool) -> list[float]:
    """`count` (1 or 2) values spanning [low, high]: both ends, or the middle."""
    if count >= 2 and high > low:
        return [low, high]
    return [math.sqrt(low * high) if log else (low + high) / 2]
