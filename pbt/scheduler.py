"""Ray Tune's PopulationBasedTraining, with exploration clipped to the search space's bounds.

Only the explore step is ours (`pbt.space.explore`); truncation selection, exploit through
checkpoints and the policy log (`pbt_global.txt`) are Ray's. `_get_new_config` is the hook Ray's
own PB2 scheduler overrides for the same purpose.
"""

from __future__ import annotations

import logging
import random

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from pbt.config import PopulationConfig
from pbt.space import SearchSpace, explore

log = logging.getLogger(__name__)


class ClippedPBT(PopulationBasedTraining):
    """PBT whose explore step never leaves the bounds of the search space, and says what it did."""

    def __init__(self, space: SearchSpace, population: PopulationConfig, metric: str, seed: int = 0) -> None:
        self.space = space
        self.rng = random.Random(seed)
        super().__init__(
            time_attr="training_iteration",
            metric=metric,
            mode="max",
            perturbation_interval=population.perturbation_interval,
            hyperparam_mutations={name: bound.domain() for name, bound in space.bounds.items()},
            quantile_fraction=population.quantile_fraction,
            resample_probability=population.resample_probability,
            perturbation_factors=tuple(population.perturbation_factors),
            synch=population.synch,
        )

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict, dict]:
        new_config, changes = explore(
            trial_to_clone.config,
            self.space,
            self.rng,
            self._resample_probability,
            self._perturbation_factors,
        )
        # The member keeps its own identity (and seed); only weights and hyperparameters move.
        new_config["member"] = trial.config["member"]
        log.info("member %s copies member %s (epoch %s): %s", trial.config["member"], trial_to_clone.config["member"],
                 trial_to_clone.last_result.get("training_iteration", "?"), "; ".join(changes.values()))
        operations = {name: text[text.rindex("(") + 1 : -1] for name, text in changes.items()}
        return new_config, operations
