"""Packs as Ray Tune trials: PBT across packs, files per member, a killed pack, the choice of engine."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import ray
import torch
from ray import tune
from vision_files import write_mnist

from pbt.config import validate_config
from pbt.engines.common import member_results
from pbt.engines.packed.plan import plan_packing, require_packs_together, require_population_packs
from pbt.engines.tuner import run_grid, run_population
from pbt.errors import PbtError
from pbt.reporting.records import ReportRecorder, read_reports
from pbt.search.space import search_space
from pbt.stages.arms import arm_packing
from pbt.stages.lineage import build_lineage
from pbt.trainer import TensorClassificationTrainer

pytestmark = pytest.mark.slow

SIZE, EPOCHS, INTERVAL = 6, 6, 2


def packed_config(tmp_path: Path, tiny_mnist1d: dict, **population) -> object:
    return validate_config({
        "name": "packed",
        "storage_path": str(tmp_path),
        "trainer": tiny_mnist1d,
        "search": {"lr": {"low": 0.01, "high": 0.1}},
        "population": {"size": SIZE, "epochs": EPOCHS, "perturbation_interval": INTERVAL,
                       "quantile_fraction": 0.33, "pack": 3, **population},
        "seed": 2,
    })


def exploit_lines(config) -> list[list]:
    path = config.experiment_dir / "pbt" / "exploits.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


class KillPackOnce(tune.Callback):
    """Kills the worker process of the pack holding member 0 once it has reported `after` epochs."""

    def __init__(self, after: int) -> None:
        self.after, self.killed_pid = after, None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.killed_pid is None and 0 in trial.config["members"] and result["training_iteration"] >= self.after:
            self.killed_pid = result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def packed_run(ray_session, tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("packed")
    config = packed_config(tmp_path, {"num_samples": 1000, "width": 0.5, "batch_size": 16})
    packing = plan_packing(config, [{"member": m} for m in range(SIZE)], ray.cluster_resources())
    killer = KillPackOnce(after=3)
    results = run_population(config, search_space(config, None), packing=packing,
                             callbacks=[ReportRecorder("pbt", config.experiment_dir / "pbt"), killer])
    return {"config": config, "packing": packing, "results": results, "killer": killer}


def test_the_population_is_spread_over_packs(packed_run):
    assert [len(group) for group in packed_run["packing"].groups] == [3, 3]
    assert len(packed_run["results"]) == 2, "one Tune trial per pack"


def test_every_member_trains_every_epoch_and_reports_as_itself(packed_run):
    results = packed_run["results"]
    assert not results.errors
    members = member_results(results)
    assert sorted(r.config["member"] for r in members) == list(range(SIZE))
    assert {r.metrics["training_iteration"] for r in members} == {EPOCHS}
    reports = read_reports(packed_run["config"].experiment_dir / "pbt")
    labels = {r["label"] for r in reports}
    assert labels == {f"member_{m:02d}" for m in range(SIZE)}
    for label in labels:  # the killed pack redid the epochs since its checkpoint: reported twice
        assert {r["epoch"] for r in reports if r["label"] == label} == set(range(1, EPOCHS + 1))
    assert all(r["compute_seconds"] > 0 for r in reports)


def test_the_bottom_third_copies_the_top_third_at_each_perturbation_once(packed_run):
    config = packed_run["config"]
    lines = exploit_lines(config)
    perturbations = (EPOCHS - 1) // INTERVAL  # epochs 2 and 4 (none at the last epoch)
    assert len(lines) == perturbations * 2, "2 of 6 members copy at each perturbation, logged once despite the kill"
    assert len({(line[5]["member"], line[3]) for line in lines}) == len(lines)
    groups = packed_run["packing"].groups
    pack_of = {member: index for index, group in enumerate(groups) for member in group}
    crossings = [line for line in lines if pack_of[line[5]["member"]] != pack_of[line[4]["member"]]]
    assert crossings, "with this seed some member copies one of the other pack"


def test_a_copy_carries_the_donors_history_and_the_explored_hyperparameters(packed_run):
    config, results = packed_run["config"], packed_run["results"]
    lineage = build_lineage(list(results), (config.experiment_dir / "pbt" / "exploits.jsonl").read_text())
    schedule = lineage["best"]["schedule"]
    assert [entry["epoch"] for entry in schedule] == list(range(1, EPOCHS + 1))
    for exploit in lineage["exploits"]:
        # After the copy the member trains with explore's values, which are inside the space.
        assert 0.001 <= exploit["changes"]["lr"][1] <= 0.1
    best = lineage["best"]
    copies = [e for e in lineage["exploits"] if e["member"] == best["member"]]
    for exploit in copies:
        after = next(entry for entry in schedule if entry["epoch"] == exploit["epoch"] + 1)
        assert after["lr"] == pytest.approx(exploit["changes"]["lr"][1], rel=1e-6)
        before = next(entry for entry in schedule if entry["epoch"] == exploit["epoch"])
        assert before["member"] != best["member"] or exploit["donor"] == best["member"]


def test_a_killed_pack_resumes_from_its_checkpoint(packed_run):
    assert packed_run["killer"].killed_pid is not None
    reports = read_reports(packed_run["config"].experiment_dir / "pbt")
    epochs = [r["epoch"] for r in reports if r["label"] == "member_00"]
    killed_at = next(i for i, epoch in enumerate(epochs) if epoch >= 3)
    resumed_from = epochs[killed_at + 1] - 1
    # Back to its checkpoint at the last perturbation, not to epoch 0.
    assert 0 < resumed_from <= epochs[killed_at]
    assert epochs[killed_at] - resumed_from <= INTERVAL


def test_packed_pbt_is_reproducible(ray_session, tmp_path, tiny_mnist1d):
    # Synchronous PBT over packs can repeat itself exactly: the same seed, the same exploits and
    # the same accuracies, whichever pack reaches the board first.
    runs = []
    for attempt in range(2):
        config = packed_config(tmp_path / str(attempt), tiny_mnist1d)
        packing = plan_packing(config, [{"member": m} for m in range(SIZE)], ray.cluster_resources())
        run_population(config, search_space(config, None), packing=packing,
                       callbacks=[ReportRecorder("pbt", config.experiment_dir / "pbt")])
        reports = read_reports(config.experiment_dir / "pbt")
        exploits = sorted(json.dumps(line) for line in exploit_lines(config))  # logged as packs report
        runs.append((sorted((r["label"], r["epoch"], r["val_acc"], r["lr"]) for r in reports), exploits))
    assert len(runs[0][0]) == SIZE * EPOCHS and runs[0][1], "every member reported every epoch, and some exploited"
    assert runs[0] == runs[1]


def test_a_packed_grid_trains_each_point_with_its_own_values(ray_session, tmp_path, tiny_mnist1d):
    config = packed_config(tmp_path, tiny_mnist1d, epochs=2)
    points = [{"member": i, "lr": lr, "momentum": 0.9, "weight_decay": 1e-4} for i, lr in enumerate([0.01, 0.02, 0.05, 0.1])]
    packing = plan_packing(config, points, {"CPU": 2.0})
    assert [len(group) for group in packing.groups] == [2, 2]
    results = run_grid(config, points, packing=packing, callbacks=[ReportRecorder("grid", tmp_path / "grid")])
    assert not results.errors
    reports = read_reports(tmp_path / "grid")
    assert len(reports) == len(points) * 2
    for report in reports:  # each point keeps its own learning rate in its pack
        assert report["lr"] == pytest.approx(points[int(report["label"][-2:])]["lr"], rel=1e-6)


def test_auto_packs_over_the_slots_and_respects_one_member_per_process(tmp_path, tiny_mnist1d):
    runs = [{"member": m} for m in range(16)]
    auto = plan_packing(packed_config(tmp_path, tiny_mnist1d, pack="auto", size=16), runs, {"CPU": 2.0})
    assert [len(g) for g in auto.groups] == [8, 8] and dict(auto.resources) == {"cpu": 1.0, "gpu": 0.0}
    assert not plan_packing(packed_config(tmp_path, tiny_mnist1d, pack=1, size=16), runs, {"CPU": 2.0}).packed
    many_slots = plan_packing(packed_config(tmp_path, tiny_mnist1d, pack="auto", size=16), runs, {"CPU": 64.0})
    assert not many_slots.packed, "a slot per member: one member per process is the same thing"
    odd = plan_packing(packed_config(tmp_path, tiny_mnist1d, pack=5, size=16), runs, {"CPU": 64.0})
    assert sorted(len(g) for g in odd.groups) == [4, 4, 4, 4]
    capped = plan_packing(packed_config(tmp_path, tiny_mnist1d, pack="auto", size=16), runs, {"CPU": 2.0}, largest=6)
    assert [len(g) for g in capped.groups] == [6, 5, 5], "at most `largest` per pack (pbt sweep: one optimizer's rates)"


def test_pbt_refuses_more_packs_than_run_at_once():
    one_cpu = {"cpu": 1.0, "gpu": 0.0}
    with pytest.raises(PbtError, match=r"16 members in 4 packs.*run 2 at once.*population.pack=8 or more"):
        require_packs_together(4, 16, one_cpu, [{"CPU": 2.0, "GPU": 0.0}])
    assert require_packs_together(4, 16, one_cpu, [{"CPU": 2.0}, {"CPU": 3.0}]) is None  # 2 + 3 slots
    assert require_packs_together(2, 16, one_cpu, [{"CPU": 2.0}]) is None
    with pytest.raises(PbtError, match=r"each asking for 1 CPU and 1 GPU, but Ray can run 1 at once"):
        require_packs_together(2, 16, {"cpu": 1.0, "gpu": 1.0}, [{"CPU": 16.0, "GPU": 1.0}])


def test_on_an_autoscaling_cluster_too_many_packs_is_a_note(monkeypatch):
    monkeypatch.setattr("pbt.engines.packed.plan.autoscaling", lambda: True)
    note = require_packs_together(4, 16, {"cpu": 1.0, "gpu": 0.0}, [{"CPU": 2.0}])
    assert "run 2 at once" in note and "the packs wait until machines join" in note


def test_only_the_pbt_arm_needs_its_packs_at_once(ray_session, tmp_path, tiny_mnist1d):
    # A grid's packs are independent trials that queue for slots; PBT's meet at each perturbation.
    config = packed_config(tmp_path, tiny_mnist1d, pack=2, size=8)
    runs = [{"member": m} for m in range(8)]
    with pytest.raises(PbtError, match="PBT across packs needs every pack running together"):
        arm_packing(config, "pbt", runs)
    assert len(arm_packing(config, "grid", runs).groups) == 4


def test_a_gpu_pack_asks_for_a_whole_gpu(tmp_path, tiny_mnist1d):
    config = packed_config(tmp_path, tiny_mnist1d, pack="auto", size=16)
    config = config.model_copy(update={"resources": config.resources.model_copy(update={"gpu": 0.25})})
    packing = plan_packing(config, [{"member": m} for m in range(16)], {"CPU": 16.0, "GPU": 1.0})
    assert [len(g) for g in packing.groups] == [16] and dict(packing.resources)["gpu"] == 1.0


def test_a_trainer_with_its_own_loop_runs_on_actors(tmp_path):
    stranger = Path(__file__).with_name("stranger.py")
    config = validate_config({"trainable": f"{stranger}:StrangerTrainer", "storage_path": str(tmp_path),
                              "population": {"size": 4}})
    packing = plan_packing(config, [{"member": m} for m in range(4)], {"CPU": 2.0})
    assert not packing.packed and "StrangerTrainer is not a pbt.TensorClassificationTrainer" in packing.note
    forced = config.model_copy(update={"population": config.population.model_copy(update={"pack": 2})})
    with pytest.raises(PbtError, match="cannot be packed; set population.pack=1"):
        plan_packing(forced, [{"member": m} for m in range(4)], {"CPU": 2.0})


class BranchingNet(torch.nn.Module):
    """A model that branches on its input's values: fine alone, impossible under vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x if x.mean() > 0 else -x)


class BranchingTrainer(TensorClassificationTrainer):
    def __init__(self, config, device):
        super().__init__(config, device)
        x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
        y = (x[:, 0] > 0).long()
        self.x_train, self.y_train, self.x_val, self.y_val = x[:160], y[:160], x[160:], y[160:]
        self.batch_size = 16
        self.model = BranchingNet()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)


def test_a_model_that_fails_under_vmap_runs_on_actors(tmp_path):
    config = validate_config({"trainable": f"{__file__}:BranchingTrainer", "storage_path": str(tmp_path),
                              "population": {"size": 4}})
    runs = [{"member": m} for m in range(4)]
    packing = plan_packing(config, runs, {"CPU": 2.0})
    assert not packing.packed and "its model fails under torch.func.vmap (RuntimeError: " in packing.note
    forced = config.model_copy(update={"population": config.population.model_copy(update={"pack": 2})})
    with pytest.raises(PbtError, match="fails under torch.func.vmap.*set population.pack=1"):
        plan_packing(forced, runs, {"CPU": 2.0})
    # The trainers that do pack pass the same trial: the built-in's default is packed.
    assert plan_packing(validate_config({"population": {"size": 4}}), runs, {"CPU": 2.0}).packed


def test_the_early_pack_count_check_leaves_a_trainer_that_cannot_pack_to_its_own_refusal(tmp_path):
    # Advising a larger pack would be wrong for a trainer that cannot pack at all.
    stranger = Path(__file__).with_name("stranger.py")
    config = validate_config({"trainable": f"{stranger}:StrangerTrainer", "storage_path": str(tmp_path),
                              "population": {"size": 128, "pack": 2}})
    assert require_population_packs(config) is None
    with pytest.raises(PbtError, match="population.pack=64 or more"):
        require_population_packs(config.model_copy(update={"trainable": "mnist1d", "trainer": {}}))


def test_readme_shows_the_note_auto_prints_for_a_trainer_that_cannot_pack(tmp_path):
    stranger = Path(__file__).with_name("stranger.py")
    config = validate_config({"trainable": f"{stranger}:StrangerTrainer", "storage_path": str(tmp_path)})
    note = plan_packing(config, [{"member": m} for m in range(4)], {"CPU": 2.0}).note
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    assert f"  note: {note}\n" in readme


def test_gpu_packs_refuse_mixed_autocast_and_channels_last(tmp_path):
    """The vision trainers' two CUDA settings must agree in a pack (vmap fails otherwise); checked on
    the driver, from the trainer class (`cuda_pack_obstacle`), with the settings' defaults (both on)."""
    write_mnist(tmp_path, train=64, test=16)
    config = validate_config({"trainable": "mnist", "storage_path": str(tmp_path),
                              "population": {"size": 4, "pack": "auto"},
                              "trainer": {"data_dir": str(tmp_path), "val_size": 16}})
    runs = [{"member": m} for m in range(4)]
    cases = [({}, True), ({"autocast": False, "channels_last": False}, True), ({"autocast": False}, False),
             ({"channels_last": False}, False), ({"autocast": True, "channels_last": False}, False)]
    for settings, packs in cases:
        mixed = config.model_copy(update={"trainer": {**config.trainer, **settings},
                                          "resources": config.resources.model_copy(update={"gpu": 1.0})})
        packing = plan_packing(mixed, runs, {"CPU": 16.0, "GPU": 1.0})
        assert packing.packed == packs, settings
        assert packs or "fails inside PyTorch's vmap on CUDA" in packing.note
    on_cpu = config.model_copy(update={"trainer": {**config.trainer, "autocast": False}})
    assert plan_packing(on_cpu, runs, {"CPU": 2.0}).packed, "the settings are ignored on the CPU"
