"""configs/cluster.yaml goes through the checks `ray up` runs before it contacts any host."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER_YAML = Path(__file__).parents[1] / "configs" / "cluster.yaml"


def test_the_cluster_launcher_config_passes_ray_ups_own_validation():
    from ray.autoscaler._private.commands import _bootstrap_config  # what `ray up` calls first

    config = _bootstrap_config(yaml.safe_load(CLUSTER_YAML.read_text()), no_config_cache=True)
    assert config["provider"]["type"] == "local"
    workers = config["available_node_types"][config["head_node_type"]]
    assert workers["min_workers"] == workers["max_workers"] == len(config["provider"]["worker_ips"])


def test_every_node_gets_the_token_and_starts_with_authentication_on():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(command for command in commands if " start " in command)
        environment = start.split("ray start")[0].split()
        assert "RAY_AUTH_MODE=token" in environment
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # the dashboard and job API stay on loopback
    assert "RAY_enable_autoscaler_v2=0" in head_start  # v2 started one worker host of two
