"""A PBT run on a real multi-node Ray cluster on this machine (a head and two worker nodes).

Run by test_cluster.py in its own process, because a test session keeps one Ray instance of its
own. With `--remove-after N`, one worker node is removed after N reports, mid-run. With
`--packed`, a tiny MNIST-1D population in packs, as `pack: auto` spreads it over the cluster.

    python tests/cluster_job.py OUT_DIR [--remove-after N] [--packed]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ray
from ray import tune
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

sys.path.insert(0, str(Path(__file__).parent))
import synthetic  # noqa: E402

from pbt.config import validate_config  # noqa: E402
from pbt.engines.common import member_results  # noqa: E402
from pbt.engines.packed.plan import Packing, plan_packing  # noqa: E402
from pbt.engines.tuner import run_population  # noqa: E402
from pbt.reporting.records import ReportRecorder, read_reports  # noqa: E402
from pbt.search.space import search_space  # noqa: E402

EPOCHS = 12


class RemoveNodeAfter(tune.Callback):
    """After `reports` results, removes the worker node that reported last."""

    def __init__(self, cluster: Cluster, workers: list, reports: int) -> None:
        self.cluster, self.workers, self.left = cluster, workers, reports
        self.removed_node_id: str | None = None
        self.last_worker = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into tuner.pkl; the live cluster handle stays in this process.
        return {"cluster": None, "workers": [], "left": -1, "removed_node_id": self.removed_node_id, "last_worker": None}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.left -= 1
        reporting = [node for node in self.workers if node.node_id == result.get("node_id")]
        if reporting:  # a node that holds a member (its actor stays there between steps)
            self.last_worker = reporting[0]
        if self.left > 0 or self.removed_node_id is not None or self.last_worker is None:
            return
        # The worker that reported last, not the reporter: a suite run saw every report after the
        # 20th come from the head (synchronous turns), and waiting for a worker's removed nothing.
        self.removed_node_id = self.last_worker.node_id
        self.cluster.remove_node(self.last_worker)


@ray.remote(num_cpus=1)
def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def warm_up(nodes: list) -> None:
    """Start a worker process on every node before the population starts. On this loaded 2-core
    machine a node's first worker can take long to come up; a suite run once saw every member
    scheduled on the head alone while the workers' nodes stayed unused."""
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        assert ray.get(_node_id.options(scheduling_strategy=strategy).remote(), timeout=180) == node.node_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--remove-after", type=int, default=0)
    parser.add_argument("--packed", action="store_true")
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        warm_up([cluster.head_node, *workers])
        config = validate_config({
            "name": "cluster",
            "storage_path": str(args.out),
            **({"trainer": {"num_samples": 1000, "width": 0.5, "batch_size": 16}} if args.packed else {
                "trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer", "trainer": {"samples": 16384}}),
            "search": {"lr": {"low": 0.05, "high": 0.5}, "momentum": {"low": 0.0, "high": 0.5}},
            "population": {"size": 6, "epochs": EPOCHS, "perturbation_interval": 2},
        })
        remover = RemoveNodeAfter(cluster, workers, args.remove_after) if args.remove_after else None
        callbacks = [ReportRecorder("pbt", args.out / "records"), *([remover] if remover else [])]
        runs = [{"member": member} for member in range(6)]
        packing = plan_packing(config, runs, ray.cluster_resources()) if args.packed else Packing()
        grid = run_population(config, search_space(config, None), callbacks=callbacks, packing=packing)
        nodes = {"head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}
        (args.out / "result.json").write_text(json.dumps({
            "errors": [str(e) for e in grid.errors],
            "final_epochs": sorted(r.metrics["training_iteration"] for r in member_results(grid)),
            "packs": [list(group) for group in packing.groups],
            "exploits": (config.experiment_dir / "pbt" / "exploits.jsonl").read_text().count("\n") if args.packed else None,
            "nodes": nodes,
            "removed": remover.removed_node_id if remover else None,
            "reports": read_reports(args.out / "records"),
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
