"""Resources no machine has are refused before anything runs (Tune would leave the members pending forever)."""

from __future__ import annotations

import pytest

from pbt.cluster.resources import check_resources, require_resources
from pbt.config import Resources
from pbt.errors import PbtError

LAPTOP = [{"CPU": 2.0, "GPU": 0.0, "memory": 1e9}]
CLUSTER = [{"CPU": 8.0}, {"CPU": 4.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 0.0}]


@pytest.mark.parametrize("asked, nodes, where, fragment", [
    ({"gpu": 1}, LAPTOP, "this machine", "resources.gpu=1: each member asks for 1 GPU on one machine, but this machine "
     "has none (2 CPUs, 0 GPUs); set resources.gpu=0 to train on the CPU"),
    ({"cpu": 64}, LAPTOP, "this machine", "resources.cpu=64: each member asks for 64 CPUs on one machine, but this "
     "machine has 2 (2 CPUs, 0 GPUs); ask for at most 2"),
    ({"cpu": 20}, CLUSTER, "the cluster", "resources.cpu=20: each member asks for 20 CPUs on one machine, but the "
     "cluster has 16 on its largest machine (machines: 8 CPUs, 0 GPUs; 4 CPUs, 2 GPUs; 16 CPUs, 0 GPUs); ask for at most 16"),
    ({"gpu": 4}, CLUSTER, "the cluster", "resources.gpu=4: each member asks for 4 GPUs on one machine, but the cluster "
     "has 2 on its largest machine"),
    # Enough CPUs somewhere and enough GPUs somewhere, but never on the same machine.
    ({"cpu": 8, "gpu": 1}, CLUSTER, "the cluster", "resources: each member asks for 8 CPUs and 1 GPU on one machine, "
     "but no machine of the cluster has both"),
])
def test_resources_no_machine_has_are_named(asked, nodes, where, fragment):
    with pytest.raises(PbtError) as caught:
        check_resources(Resources(**asked), nodes, where)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("asked", [{"cpu": 16}, {"cpu": 4, "gpu": 2}, {"cpu": 0.5, "gpu": 0.25}])
def test_resources_some_machine_has_pass(asked):
    check_resources(Resources(**asked), CLUSTER)


def test_an_autoscaling_cluster_gets_a_note_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(PbtError, match="resources.gpu=64"):  # 64: more than any test machine has
        require_resources(Resources(gpu=64), on_cluster=False)
    (tmp_path / "ray_bootstrap_config.yaml").write_text("cluster_name: test\n")  # what `ray up` leaves on the head
    note = require_resources(Resources(gpu=64), on_cluster=True)
    assert note.startswith("note: resources.gpu=64: each member asks for 64 GPUs") and "pbt goes on" in note
