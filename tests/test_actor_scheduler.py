"""When PBT lets a member go on past a perturbation instead of pausing it for others."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from pbt.config import PopulationConfig
from pbt.engines.actor.scheduler import keep_running, synchronous


def trials(running: int, pending: int = 0, paused: int = 0, terminated: int = 0) -> list:
    statuses = ([Trial.RUNNING] * running + [Trial.PENDING] * pending + [Trial.PAUSED] * paused
                + [Trial.TERMINATED] * terminated)
    return [SimpleNamespace(status=status) for status in statuses]


@pytest.mark.parametrize("cluster, population, expected", [
    # 3 hosts x 2 CPUs, 6 members, 2 running on the head while 4 actors start elsewhere: go on.
    ({"CPU": 6.0}, trials(running=2, pending=4), True),
    # More members than slots: they take turns, as Ray has them, even while a slot is free for a moment.
    ({"CPU": 2.0}, trials(running=2, pending=14), False),
    ({"CPU": 2.0}, trials(running=1, paused=3), False),
    # Finished members need no slot.
    ({"CPU": 2.0}, trials(running=1, pending=1, terminated=2), True),
    # GPUs count too: 8 CPUs but 2 GPUs hold only 2 members that need a GPU each.
    ({"CPU": 8.0, "GPU": 2.0}, trials(running=2, pending=2), False),
])
def test_a_member_goes_on_only_when_every_unfinished_member_has_a_slot(cluster, population, expected):
    per_trial = {"CPU": 1.0, "GPU": 1.0} if "GPU" in cluster else {"CPU": 1.0}
    assert keep_running(population, per_trial, cluster) is expected


def test_a_resource_the_cluster_lacks_leaves_no_slot():
    assert keep_running(trials(running=0, pending=1), {"CPU": 1.0, "GPU": 1.0}, {"CPU": 8.0}) is False


@pytest.mark.parametrize("synch, size, cluster, expected", [
    ("auto", 16, {"CPU": 2.0}, True),   # 16 members take turns on 2 slots: ranked at one epoch
    ("auto", 6, {"CPU": 6.0}, False),   # every member has a slot: no barrier, no pauses
    ("auto", 4, {"CPU": 8.0, "GPU": 2.0}, True),  # the GPUs are the slots
    (True, 2, {"CPU": 8.0}, True),
    (False, 16, {"CPU": 2.0}, False),
])
def test_auto_is_synchronous_only_when_members_take_turns(synch, size, cluster, expected):
    population = PopulationConfig(size=size, synch=synch)
    per_member = {"CPU": 1.0, "GPU": 1.0 if "GPU" in cluster else 0.0}
    assert synchronous(population, per_member, cluster) is expected
