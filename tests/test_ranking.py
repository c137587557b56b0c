"""How PBT ranks members. After a cooldown probe (`population.probe`): the probe anneals a copy and
leaves the member as it was, in both engines; members are ranked by the probe; its compute counts in
PBT's. By improvement (`population.improvement_weight`): validation accuracy plus its rise."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import synthetic
import torch
import yaml
from test_schedule import OwnLoopTrainer, RecordingTrainer

from pbt.cli import main
from pbt.config import PopulationConfig, validate_config
from pbt.engines.common import improvement_score
from pbt.engines.packed.model import PackedTrainer
from pbt.engines.scheduled import cooldown_probe
from pbt.errors import PbtError
from pbt.reporting.compare import summarize_arm
from pbt.reporting.records import read_reports

CPU = torch.device("cpu")
SETTINGS = {"samples": 128, "batch_size": 32}  # 4 steps an epoch


def momentum_trainer(cls=RecordingTrainer):
    trainer = cls(SETTINGS, CPU)
    trainer.optimizer.param_groups[0]["momentum"] = 0.9
    trainer.train_epoch()  # a momentum buffer to keep
    trainer.rates.clear()
    return trainer


def test_a_probe_anneals_the_rate_to_zero_and_puts_the_member_back():
    torch.manual_seed(0)
    probed = momentum_trainer()
    torch.manual_seed(0)
    twin = momentum_trainer()
    rng = torch.get_rng_state()
    probe = cooldown_probe(probed, 0.3, 3)
    assert probe.steps == 3
    assert probed.rates == pytest.approx([0.3, 0.2, 0.1])
    assert torch.equal(torch.get_rng_state(), rng)
    assert cooldown_probe(probed, 0.3, 3) == probe, "the same state probes to the same score"
    # Weights, momentum buffer and rate are back: the probed member trains on exactly as its twin.
    assert probed.optimizer.param_groups[0]["lr"] == 0.01
    probed.train_epoch()
    torch.set_rng_state(rng)
    twin.train_epoch()
    assert torch.equal(probed.model.weight, twin.model.weight)


def test_a_trainer_with_its_own_epoch_loop_probes_a_whole_epoch_at_the_starting_rate():
    trainer = momentum_trainer(OwnLoopTrainer)
    before = trainer.model.weight.clone()
    probe = cooldown_probe(trainer, 0.2, 3)
    assert probe.steps == 0, "no step was drawn from batches(): the probe says so"
    assert trainer.rates == pytest.approx([0.2, 0.2])
    assert torch.equal(trainer.model.weight, before)


def test_a_pack_probes_every_member_and_is_put_back():
    experiment = validate_config({"trainer": {"num_samples": 400, "width": 0.5, "batch_size": 32}})
    hyperparams = [{"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, {"lr": 0.02, "momentum": 0.85, "weight_decay": 0.0}]
    pack = PackedTrainer.build(experiment, [0, 1], hyperparams)
    pack.train_epoch()
    before = {name: value.clone() for name, value in pack.state_dict()["params"].items()}
    rates = []
    step = pack.train_step
    pack.train_step = lambda indices: (rates.append(pack.optimizer.lr.tolist()), step(indices))[1]
    scores = pack.cooldown_probe(0.5, 4)
    assert len(scores) == 2 and all(0 <= score <= 1 for score in scores)
    for i, step_rates in enumerate(rates):
        assert step_rates == pytest.approx([0.5 * lr * (1 - i / 4) for lr in (0.05, 0.02)])
    assert len(rates) == 4
    after = pack.state_dict()["params"]
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert [pack.hyperparams(member)["lr"] for member in (0, 1)] == pytest.approx([0.05, 0.02])


POPULATION = {"size": 4, "epochs": 6, "perturbation_interval": 2, "quantile_fraction": 0.5, "probe": 0.25}
PROBED_EPOCHS = {2, 4}  # the perturbations: none at the last epoch
ENGINES = {
    "packed": {"trainer": {"num_samples": 1000, "width": 0.5, "batch_size": 32},
               "search": {"lr": {"low": 0.001, "high": 0.3}}},
    "actors": {"trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer", "trainer": {"samples": 256},
               "search": {"lr": {"low": 0.001, "high": 0.5}, "momentum": {"low": 0.0, "high": 0.5}},
               "population": {"pack": 1}},
}


def test_the_improvement_score_adds_the_rise_since_the_previous_ranking():
    population = PopulationConfig(epochs=12, perturbation_interval=4, improvement_weight=0.5)
    history = [{"epoch": epoch, "val_acc": 0.1 * epoch} for epoch in range(1, 8)]
    assert population.previous_perturbation(4) == 1 and population.previous_perturbation(8) == 4
    assert improvement_score(population, history, 8, 0.9) == pytest.approx(0.9 + 0.5 * (0.9 - 0.4))
    assert improvement_score(population, [], 4, 0.5) == 0.5, "no earlier reading: the accuracy alone"
    assert "+ 0.5 x its rise since the last ranking" in population.describe_ranking()


def test_a_probe_and_an_improvement_ranking_together_are_refused():
    with pytest.raises(PbtError, match="probe and improvement_weight"):
        validate_config({"population": {"probe": 0.25, "improvement_weight": 1}})


def run_probed(tmp_path: Path, **sections) -> tuple[str, Path]:
    config = tmp_path / "probed.yaml"
    population = {**POPULATION, **sections.pop("population", {})}
    config.write_text(yaml.safe_dump({"name": "probed", "storage_path": str(tmp_path / "results"), "seed": 1,
                                      **sections, "population": population}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["pbt", str(config)])
    assert code == 0, out.getvalue()
    return out.getvalue(), tmp_path / "results" / "probed"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["packed", "actors"])
def test_members_are_ranked_by_their_probe_and_its_compute_counts(ray_session, tmp_path, engine):
    out, folder = run_probed(tmp_path, **ENGINES[engine])
    assert "after a cooldown probe of 25% of an epoch (counted in PBT's compute)" in out
    members = [json.loads(line) for line in (folder / "pbt" / "reports.jsonl").read_text().splitlines()]
    assert {r["epoch"] for r in members if r["probe_epochs"] > 0} == PROBED_EPOCHS
    assert all(0 < r["probe_epochs"] <= 0.25 for r in members if r["epoch"] in PROBED_EPOCHS)
    unprobed = [r for r in members if r["epoch"] not in PROBED_EPOCHS]
    assert all(r["rank_score"] == r["val_acc"] for r in unprobed), "no probe: ranked by validation accuracy"
    # Each exploit copied a member that ranked at least as high by its probe.
    score = {(r["label"], r["epoch"]): r["rank_score"] for r in members}
    exploits = json.loads((folder / "lineage.json").read_text())["exploits"]
    assert exploits
    for exploit in exploits:
        donor, copier = f"member_{exploit['donor']:02d}", f"member_{exploit['member']:02d}"
        assert score[donor, exploit["epoch"]] >= score[copier, exploit["member_epoch"]], exploit
    compute = summarize_arm("pbt", read_reports(folder / "pbt")).epochs
    trained = sum(r["epochs_executed"] for r in members)
    assert compute == pytest.approx(trained + sum(r["probe_epochs"] for r in members))
    assert compute > trained, "the probes' compute is in PBT's column"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["packed", "actors"])
def test_members_are_ranked_by_their_rise_in_both_engines(ray_session, tmp_path, engine):
    sections = ENGINES[engine]
    population = {**sections.get("population", {}), "probe": 0, "improvement_weight": 1}
    out, folder = run_probed(tmp_path, **{**sections, "population": population})
    assert "ranked by validation accuracy + 1 x its rise since the last ranking" in out
    members = [json.loads(line) for line in (folder / "pbt" / "reports.jsonl").read_text().splitlines()]
    val = {(r["label"], r["epoch"]): r["val_acc"] for r in members}
    first = [r for r in members if r["epoch"] == 2]  # nobody has copied yet: each member's own epoch 1
    assert len(first) == 4
    for report in first:
        assert report["rank_score"] == pytest.approx(2 * report["val_acc"] - val[report["label"], 1])
    assert all(r["rank_score"] == r["val_acc"] for r in members if r["epoch"] not in PROBED_EPOCHS)
