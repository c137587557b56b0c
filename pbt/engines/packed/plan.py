"""How a population is packed: which members train together as one vectorised model (`population.pack`).

`auto` spreads the population over the slots the machine or cluster has at once (a slot is
`resources.cpu` CPUs, and a whole GPU when `resources.gpu` > 0), so every pack runs at the same
time; a number packs that many members together; 1, or a trainer that cannot be packed, runs one
member per process as before. A pack asks Ray for the resources of one slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbt.cluster.resources import autoscaling, current_nodes
from pbt.config import ExperimentConfig
from pbt.engines.packed.model import optimizer_obstacle, packing_obstacle, vmap_obstacle
from pbt.errors import PbtError
from pbt.registry import build_trainer, resolve_trainer


@dataclass(frozen=True)
class Packing:
    """The engine an arm runs on: `groups` of members (indices into the arm's runs) per pack, or
    none for one member per process; `note` says why in one line when `auto` fell back."""

    groups: tuple[tuple[int, ...], ...] = ()
    resources: tuple[tuple[str, float], ...] = ()
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(group) for group in self.groups], "resources": dict(self.resources), "note": self.note}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Packing:
        return cls(groups=tuple(tuple(group) for group in saved["groups"]),
                   resources=tuple(saved["resources"].items()), note=saved.get("note"))

    @property
    def packed(self) -> bool:
        return bool(self.groups)

    def describe(self, runs: str = "members") -> str:
        sizes = sorted({len(group) for group in self.groups})
        size = " or ".join(str(s) for s in sizes)
        where = "a whole GPU" if dict(self.resources).get("gpu") else f"{dict(self.resources)['cpu']:g} CPU"
        return (f"packed: {sum(len(g) for g in self.groups)} {runs} in {len(self.groups)} pack(s) of {size}, "
                f"each one vectorised model on {where} (set population.pack=1 for one process per member)")


def pack_obstacle(config: ExperimentConfig) -> str | None:
    """Why this experiment's members cannot be packed (one line), or None."""
    cls = resolve_trainer(config.trainable)
    obstacle = packing_obstacle(cls)
    if obstacle is None and config.resources.gpu > 0:
        obstacle = cls.cuda_pack_obstacle(config.trainer)
    if obstacle is None:  # the optimizer and the model are the trainer's: build one member to see them
        trainer = build_trainer(config, device="cpu")
        obstacle = optimizer_obstacle(trainer.optimizer) or vmap_obstacle(trainer)
    return obstacle


def plan_packing(
    config: ExperimentConfig, runs: list[dict[str, Any]], cluster: dict[str, float], largest: int | None = None,
) -> Packing:
    """Pack `runs` (members or grid points; each may name an `optimizer`) for a cluster with
    `cluster` resources (`ray.cluster_resources()`); `auto` makes no pack larger than `largest`."""
    wanted = config.population.pack
    if wanted == 1 or len(runs) < 2:
        return Packing()
    obstacle = pack_obstacle(config)
    if obstacle:
        if wanted == "auto":
            return Packing(note=f"population.pack=auto: {obstacle}, so each member trains in its own process "
                                "(see README, 'Packed populations', for what a trainer needs to pack)")
        raise PbtError(f"population.pack={wanted}: {obstacle}, so its members cannot be packed; set population.pack=1")
    resources = pack_resources(config)
    if wanted == "auto":
        slots = [int(cluster.get(key.upper(), 0.0) // amount) for key, amount in resources.items() if amount > 0]
        per_pack = min(math.ceil(len(runs) / max(1, min(slots))), largest or len(runs))
    else:
        per_pack = wanted
    if per_pack < 2:  # as many slots as runs: one member per process is the same thing
        return Packing()
    groups: list[tuple[int, ...]] = []
    for optimizer in dict.fromkeys(run.get("optimizer") for run in runs):  # a pack holds one optimizer
        indices = [i for i, run in enumerate(runs) if run.get("optimizer") == optimizer]
        # Consecutive chunks whose sizes differ by one at most.
        groups.extend(tuple(int(i) for i in chunk) for chunk in np.array_split(indices, math.ceil(len(indices) / per_pack)))
    return Packing(groups=tuple(groups), resources=tuple(resources.items()))


def pack_resources(config: ExperimentConfig) -> dict[str, float]:
    """What one pack asks Ray for: one slot, `resources.cpu` CPUs and a whole GPU when any."""
    return {"cpu": config.resources.cpu, "gpu": float(math.ceil(config.resources.gpu))}


def require_packs_together(packs: int, members: int, resources: dict[str, float],
                           nodes: list[dict[str, float]] | None = None) -> str | None:
    """Refuse `packs` packs (of `members` in all, each asking for `resources`) that `nodes` (by
    default the cluster's, or this machine's) cannot run at once; on an autoscaling cluster, return
    that as a note instead, since machines may join. PBT across packs is synchronous: a pack waits
    at each perturbation for all the others while holding its slot, so a pack that never got a
    slot would keep the rest waiting until the board gives up (an hour)."""
    nodes = current_nodes() if nodes is None else nodes
    wanted = {key: amount for key, amount in resources.items() if amount > 0}
    slots = sum(min(int(node.get(key.upper(), 0.0) // amount) for key, amount in wanted.items()) for node in nodes)
    if packs <= slots:
        return None
    asked = " and ".join(f"{amount:g} {key.upper()}" for key, amount in wanted.items())
    has = ", ".join(f"{sum(node.get(key.upper(), 0.0) for node in nodes):g} {key.upper()}s" for key in wanted)
    fits = f"population.pack={math.ceil(members / slots)} or more, or " if slots else ""
    err = PbtError(
        f"population.pack: {members} members in {packs} packs, each asking for {asked}, but Ray can run "
        f"{slots} at once here ({has} in {len(nodes)} machine(s)); PBT across packs needs every pack "
        f"running together (they meet at each perturbation): set {fits}population.pack=auto")
    if not autoscaling():
        raise err
    return f"{err}. The cluster autoscales (`ray up`), so pbt goes on: the packs wait until machines join"


def require_population_packs(config: ExperimentConfig) -> str | None:
    """`require_packs_together` for the population an explicit `population.pack` makes, checked
    before anything runs (`auto` plans for the slots there are; the arm checks its packing again)."""
    pack, size = config.population.pack, config.population.size
    if pack == "auto" or pack < 2 or size < 2 or packing_obstacle(resolve_trainer(config.trainable)):
        return None  # a trainer that cannot pack at all is refused by `plan_packing`, with its reason
    return require_packs_together(math.ceil(size / pack), size, pack_resources(config))
