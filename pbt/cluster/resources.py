"""Whether what one member asks for (`resources:`) can ever be had, checked before anything runs.

Ray Tune leaves a trial whose resources no node has pending forever, without a word; so a GPU on
a machine without one, or more CPUs than any node has, would hang silently after the range test.
On an autoscaling cluster (`ray up`) such nodes may still join, so there it is only said.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pbt.config import Resources
from pbt.errors import PbtError

NodeResources = Mapping[str, float]


def local_machine() -> list[dict[str, float]]:
    """What a local Ray started by pbt would have, found without starting it: CPUs as Ray counts
    them (cgroup limits included) and the GPUs PyTorch sees."""
    import ray._private.utils
    import torch

    return [{"CPU": float(ray._private.utils.get_num_cpus()), "GPU": float(torch.cuda.device_count())}]


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of every live node of the cluster this process is connected to."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def current_nodes() -> list[dict[str, float]]:
    """The cluster's live machines once this process is connected to Ray, else this machine as a
    local Ray would have it."""
    import ray

    return cluster_nodes() if ray.is_initialized() else local_machine()


def autoscaling() -> bool:
    """Whether this is the head of a cluster started by `ray up`, which adds nodes on demand.
    The same test Ray Tune makes (ray.tune.execution.cluster_info._is_ray_cluster)."""
    return Path("~/ray_bootstrap_config.yaml").expanduser().exists()


def check_resources(resources: Resources, nodes: list[NodeResources], where: str = "the cluster") -> None:
    """A `PbtError` naming the key, what was asked and what the nodes have, when no node can ever
    hold one member; `where` names the nodes in the message ("this machine", "the cluster")."""
    asked = {"cpu": resources.cpu, "gpu": resources.gpu}
    for key, amount in asked.items():
        most = max((node.get(key.upper(), 0.0) for node in nodes), default=0.0)
        if amount > most:
            has = "none" if most == 0 else f"{most:g}" if len(nodes) == 1 else f"{most:g} on its largest machine"
            advice = "set resources.gpu=0 to train on the CPU" if most == 0 and key == "gpu" else f"ask for at most {most:g}"
            raise PbtError(
                f"resources.{key}={amount:g}: each member asks for {_count(amount, key)} on one machine, "
                f"but {where} has {has} ({_describe(nodes)}); {advice}"
            )
    if not any(all(node.get(key.upper(), 0.0) >= amount for key, amount in asked.items()) for node in nodes):
        raise PbtError(
            f"resources: each member asks for {_count(resources.cpu, 'cpu')} and {_count(resources.gpu, 'gpu')} on one machine, "
            f"but no machine of {where} has both ({_describe(nodes)})"
        )


def _count(amount: float, key: str) -> str:
    return f"{amount:g} {key.upper()}{'' if amount == 1 else 's'}"


def _describe(nodes: list[NodeResources]) -> str:
    machines = [f"{node.get('CPU', 0.0):g} CPUs, {node.get('GPU', 0.0):g} GPUs" for node in nodes[:4]]
    more = f"; and {len(nodes) - 4} more" if len(nodes) > 4 else ""
    return ("machines: " if len(nodes) > 1 else "") + "; ".join(machines) + more


def require_resources(resources: Resources, on_cluster: bool) -> str | None:
    """Check `resources` against the cluster this process is connected to (`on_cluster`) or this
    machine. Raises the `PbtError` of `check_resources`, or on an autoscaling cluster returns it
    as a note to print: nodes that have what was asked may still join."""
    nodes = current_nodes()
    try:
        check_resources(resources, nodes, "the cluster" if on_cluster else "this machine")
    except PbtError as err:
        if not autoscaling():
            raise
        return (f"note: {err}. The cluster autoscales (`ray up`), so pbt goes on: members wait until "
                "machines with these resources join")
    return None
