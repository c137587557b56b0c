"""PBT across packs: truncation selection over the whole population, synchronous at each perturbation.

A pack (`pbt.engines.packed.trainable.PackTrial`) that has trained to a perturbation epoch offers its members'
scores and its state to the `PlanBoard`, a Ray actor, and waits. When every pack has offered,
the board ranks all members by validation accuracy; each member of the bottom quantile copies a
random member of the top quantile and explores from its hyperparameters, with the quantile rule
of Ray's `PopulationBasedTraining` and the clipped `pbt.search.space.explore` of `ClippedPBT`. Each
pack gets back its moves: inside the pack an index copy, across packs a read of the donor pack's
offered state (through Ray's object store), then trains on.

Synchronous by design: every pack holds members of every rank, so no pack could copy into a
member while the others train on; and every member of a pack trains the same epochs, so no
member repeats epochs as asynchronous clones do. The cost is that packs wait for the slowest;
and since a waiting pack holds its slot, every pack must run at once (`pbt.engines.packed.plan` sees to it).

Packs never pause, so Tune keeps their processes: pausing would end them (Tune caches the actor
of a paused trial only while another trial is staged) and start new ones at every perturbation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import ray
from ray import tune

from pbt.config import PopulationConfig
from pbt.engines.common import EXPLOIT_LOGGER
from pbt.search.space import explore, space_from_dict

log = logging.getLogger(EXPLOIT_LOGGER)  # a fixed name: `pbt` prints what it logs

BOARD_WAIT_SECONDS = 3600.0  # how long a pack waits for the others at a perturbation before it fails


class PlanBoard:
    """The packs' meeting point (run as an async Ray actor: many packs wait on it at once).

    A barrier at epoch `b` opens when every active pack has called at least once and every active
    pack whose first call came at or before `b` has offered at `b`. After `pbt resume` the packs
    restart from their own last checkpoints, which may be one perturbation apart: a pack already
    past `b` is left out of `b`'s ranking instead of being waited for.
    """

    def __init__(self, packs: list[int], space: dict[str, Any], population: dict[str, Any], seed: int) -> None:
        self.space = space_from_dict(space)
        self.population = PopulationConfig.model_validate(population)
        self.rng = random.Random(seed)
        self.active = set(packs)
        self.first_epoch: dict[int, int] = {}
        self.offers: dict[int, dict[int, dict[str, Any]]] = {}
        self.plans: dict[int, dict[int, list[dict[str, Any]]]] = {}
        self.opened: dict[int, asyncio.Event] = {}

    async def exchange(self, pack: int, epoch: int, members: list[dict[str, Any]], state: list[Any]) -> list[dict[str, Any]]:
        """Offer a pack's `members` (slot, member, score, hyperparams) and `state` (`[ObjectRef]`:
        a list, so that Ray passes the reference rather than the value) at `epoch`; returns this
        pack's moves once every pack has offered."""
        self.first_epoch.setdefault(pack, epoch)
        if epoch in self.plans:  # a pack restarted from its checkpoint asks again
            return self.plans[epoch].get(pack, [])
        self.offers.setdefault(epoch, {})[pack] = {"members": members, "state": state}
        opened = self.opened.setdefault(epoch, asyncio.Event())
        self._maybe_open()
        await asyncio.wait_for(opened.wait(), BOARD_WAIT_SECONDS)
        return self.plans[epoch].get(pack, [])

    def retire(self, pack: int) -> None:
        """A pack that failed for good: the others stop waiting for it."""
        self.active.discard(pack)
        self._maybe_open()

    def _maybe_open(self) -> None:
        if not self.active <= set(self.first_epoch):
            return
        for epoch in sorted(self.offers):
            expected = {pack for pack in self.active if self.first_epoch[pack] <= epoch}
            if epoch in self.plans or not expected <= set(self.offers[epoch]):
                continue
            self.plans = {epoch: self._plan(epoch, self.offers[epoch])}  # older plans' states can go
            self.offers = {e: offers for e, offers in self.offers.items() if e > epoch}
            self.opened[epoch].set()

    def _plan(self, epoch: int, offers: dict[int, dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        population = self.population
        # In pack order, not arrival order, so the seeded shuffle makes the same plan in every run
        # (scores on a validation split tie often); the shuffle then breaks ties at random.
        entries = [(member["score"], pack, member)
                   for pack, offer in sorted(offers.items()) for member in offer["members"]]
        self.rng.shuffle(entries)
        entries.sort(key=lambda entry: entry[0])
        bottom, top = quantiles(entries, population.quantile_fraction)
        plans: dict[int, list[dict[str, Any]]] = {pack: [] for pack in offers}
        for _, pack, member in bottom:
            _, donor_pack, donor = self.rng.choice(top)
            hyperparams, changes = explore(donor["hyperparams"], self.space, self.rng, population.resample_probability,
                                           tuple(population.perturbation_factors))
            plans[pack].append({
                "slot": member["slot"], "member": member["member"], "epoch": epoch,
                "donor_slot": donor["slot"], "donor_member": donor["member"],
                "state": None if donor_pack == pack else offers[donor_pack]["state"],
                "donor_hyperparams": donor["hyperparams"], "hyperparams": hyperparams,
                "changes": "; ".join(changes.values()),
            })
        return plans


def start_board(name: str, packs: int, space: dict[str, Any], population: PopulationConfig, seed: int) -> Any:
    """A fresh board named `name` (one left by an earlier run of this experiment in this Ray is ended)."""
    try:
        ray.kill(ray.get_actor(name))
    except ValueError:
        pass
    actor = ray.remote(PlanBoard).options(name=name, num_cpus=0, max_concurrency=max(16, 2 * packs))
    return actor.remote(list(range(packs)), space, population.model_dump(), seed)


class PackExploits(tune.Callback):
    """On the driver: prints each exploit a pack reports having applied, appends it once to the
    exploit log in the format of Ray's policy log (`pbt.stages.lineage.read_exploits` reads both), and
    tells the board when a pack failed for good."""

    def __init__(self, exploit_log: Path, board_name: str) -> None:
        self.exploit_log, self.board_name = exploit_log, board_name
        self.logged: set[tuple[int, int]] | None = None  # (member, epoch) of the exploits in the log

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        moves = list((result.get("exploits") or {}).values())
        if not moves:
            return
        if self.logged is None:  # a resumed run: the exploits logged before the stop
            self.logged = {(entry[5]["member"], entry[3]) for entry in _policy_lines(self.exploit_log)}
        lines = []
        for move in moves:
            if (move["member"], move["epoch"]) in self.logged:  # a pack restarted from its checkpoint applies its moves again
                continue
            self.logged.add((move["member"], move["epoch"]))
            log.info("member %s copies member %s (epoch %s): %s", move["member"], move["donor_member"], move["epoch"],
                     move["changes"])
            lines.append(json.dumps([
                f"member_{move['member']}", f"member_{move['donor_member']}", move["epoch"], move["epoch"],
                {"member": move["donor_member"], **move["donor_hyperparams"]},
                {"member": move["member"], **move["hyperparams"]},
            ]))
        if lines:
            self.exploit_log.parent.mkdir(parents=True, exist_ok=True)
            with self.exploit_log.open("a") as stream:
                stream.write("\n".join(lines) + "\n")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            ray.get_actor(self.board_name).retire.remote(trial.config["pack"])
        except ValueError:  # no board (a grid)
            pass


def _policy_lines(path: Path) -> list[list[Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quantiles(ranked: list[Any], fraction: float) -> tuple[list[Any], list[Any]]:
    """Bottom and top of a list sorted worst first, cut as Ray's `PopulationBasedTraining._quantiles`
    cuts them: ceil(n x fraction) each, at most half of the population."""
    if len(ranked) <= 1:
        return [], []
    count = math.ceil(len(ranked) * fraction)
    if count > len(ranked) / 2:
        count = len(ranked) // 2
    return ranked[:count], ranked[-count:]
