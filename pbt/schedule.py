"""The learning-rate schedule every arm shares: a member's rate at global step t of its budget T is
`lr x factor(t / T)`, computed from the step and the member's hyperparameters alone.

No scheduler object is ever checkpointed or restored: a torch scheduler's state would travel with
an exploit (the copier would follow the donor's peak) and `OneCycleLR` ignores a new `max_lr`
after `load_state_dict`. Here PBT mutates `lr`, the schedule's peak, and the shape does the rest;
a member that copies a donor continues at the donor's step (nanoGPT's `get_lr(step)` is the model).

Shapes, over the share p = t / T of the budget trained so far:

- `constant`: 1 (what pbt did before schedules);
- `one_cycle`: linear from `start_factor` up to 1 over `warmup` (0.3 unless given), then cosine
  down to `final_factor` (Smith's one-cycle, as `OneCycleLR` draws it);
- `cosine`: linear warmup over `warmup` (none unless given), then cosine down to `final_factor`;
- `wsd`: warmup, stable at 1 until `cooldown_start`, then linear down to `final_factor`.

With `cycle_momentum`, momentum moves against the rate: the member's own momentum at the peak,
rising to `max_momentum` where the rate is lowest (Smith 2018).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Shape = Literal["constant", "one_cycle", "cosine", "wsd"]
ONE_CYCLE_WARMUP = 0.3  # OneCycleLR's pct_start


class ScheduleConfig(BaseModel):
    """`schedule:` in the experiment config: the shape every member, grid point and replay follows."""

    model_config = ConfigDict(extra="forbid")

    shape: Shape = Field("constant", description="constant, one_cycle, cosine or wsd (warmup, stable, linear cooldown).")
    warmup: float | None = Field(
        None, ge=0, lt=1, description="Share of the budget rising linearly to the peak; default 0.3 for one_cycle, else 0.")
    start_factor: float = Field(0.04, gt=0, le=1, description="The warmup starts at lr x this (OneCycleLR: 1/25).")
    cooldown_start: float = Field(0.8, gt=0, lt=1, description="wsd: share of the budget after which the rate falls.")
    final_factor: float = Field(0.01, ge=0, le=1, description="The rate at the end of the budget, as a share of lr.")
    cycle_momentum: bool = Field(False, description="Momentum moves against the rate, up to max_momentum.")
    max_momentum: float = Field(0.95, ge=0, lt=1, description="With cycle_momentum: momentum where the rate is lowest.")

    @model_validator(mode="after")
    def _warmup_before_cooldown(self) -> ScheduleConfig:
        if self.shape == "wsd" and self.warmup_share >= self.cooldown_start:
            raise ValueError(f"the warmup must end before the cooldown starts, but got warmup={self.warmup_share} "
                             f"and cooldown_start={self.cooldown_start}")
        return self

    @property
    def warmup_share(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return ONE_CYCLE_WARMUP if self.shape == "one_cycle" else 0.0

    @property
    def constant(self) -> bool:
        return self.shape == "constant"

    def factor(self, progress: float) -> float:
        """The rate at `progress` (t / T, clipped to [0, 1]) as a share of the peak `lr`."""
        if self.constant:
            return 1.0
        p = min(max(progress, 0.0), 1.0)
        warmup = self.warmup_share
        if p < warmup:
            return self.start_factor + (1.0 - self.start_factor) * p / warmup
        if self.shape == "wsd":
            if p <= self.cooldown_start:
                return 1.0
            return 1.0 + (self.final_factor - 1.0) * (p - self.cooldown_start) / (1.0 - self.cooldown_start)
        fall = (p - warmup) / (1.0 - warmup)  # one_cycle and cosine: cosine from 1 to final_factor
        return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * fall))

    def at(self, progress: float, hyperparams: dict[str, Any]) -> dict[str, float]:
        """The lr (and momentum, when it cycles) a member with `hyperparams` trains with at `progress`."""
        factor = self.factor(progress)
        values = {"lr": hyperparams["lr"] * factor}
        if self.cycle_momentum and hyperparams.get("momentum"):
            peak = hyperparams["momentum"]
            high = max(self.max_momentum, peak)
            values["momentum"] = high - (high - peak) * factor
        return values

    def describe(self) -> str:
        """One line: `cosine, warmup 5%, down to 1% of lr`."""
        if self.constant:
            return "constant (each member at its own lr throughout)"
        parts = [self.shape.replace("_", "-")]
        if self.warmup_share:
            parts.append(f"warmup {self.warmup_share:.0%} from {self.start_factor:g} x lr")
        if self.shape == "wsd":
            parts.append(f"cooldown from {self.cooldown_start:.0%}")
        parts.append(f"down to {self.final_factor:g} x lr at the end")
        if self.cycle_momentum:
            parts.append(f"momentum up to {self.max_momentum:g} as the rate falls")
        return ", ".join(parts)
