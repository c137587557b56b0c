"""Perturbations that grow apart (`population.interval_growth`): where they fall, and that both
engines rank and exploit at those epochs only."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import synthetic
import yaml

from pbt.cli import main
from pbt.config import PopulationConfig, validate_config
from pbt.errors import PbtError

GROWING = {"epochs": 10, "perturbation_interval": 2, "interval_growth": 1.5}
GROWING_EPOCHS = (2, 5, 9)  # intervals 2, 3, then 4.5 rounded to 4; 9 + 7 is past the end


@pytest.mark.parametrize(("population", "epochs", "text"), [
    ({"epochs": 60, "perturbation_interval": 4}, tuple(range(4, 60, 4)), "every 4 epochs"),
    ({"epochs": 60, "perturbation_interval": 4, "exploit_until": 0.8}, tuple(range(4, 49, 4)),
     "every 4 epochs up to epoch 48"),
    (GROWING, GROWING_EPOCHS, "after epochs 2, 5 and 9"),
    ({"epochs": 60, "perturbation_interval": 4, "interval_growth": 1.25}, (4, 9, 15, 23, 33, 45),
     "after epochs 4, 9, 15, 23, 33 and 45"),
    ({"epochs": 6, "perturbation_interval": 4, "interval_growth": 2}, (4,), "after epoch 4"),
])
def test_perturbation_epochs(population, epochs, text):
    config = PopulationConfig(**population)
    assert config.perturbation_epochs() == epochs
    assert config.describe_perturbations() == text


def test_a_growth_below_one_is_refused():
    with pytest.raises(PbtError, match="interval_growth"):
        validate_config({"population": {"interval_growth": 0.5}})


def run_growing(tmp_path: Path, population: dict | None = None, **sections) -> tuple[str, list[dict]]:
    config = tmp_path / "growing.yaml"
    config.write_text(yaml.safe_dump({
        "name": "growing", "storage_path": str(tmp_path / "results"), "seed": 1,
        **sections,
        "population": {"size": 4, "quantile_fraction": 0.5, **GROWING, **(population or {})},
    }))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["pbt", str(config)])
    assert code == 0, out.getvalue()
    return out.getvalue(), json.loads((tmp_path / "results" / "growing" / "lineage.json").read_text())["exploits"]


@pytest.mark.slow
def test_packs_exploit_at_the_growing_epochs_only(ray_session, tmp_path):
    out, exploits = run_growing(tmp_path, trainer={"num_samples": 1000, "width": 0.5, "batch_size": 32},
                                search={"lr": {"low": 0.001, "high": 0.3}})
    assert "exploit/explore after epochs 2, 5 and 9" in out
    assert "packed:" in out
    # Half the population is the bottom: two members copy at each of the three perturbations.
    assert sorted(e["epoch"] for e in exploits) == sorted(2 * GROWING_EPOCHS)


@pytest.mark.slow
@pytest.mark.parametrize("synch", [True, False])
def test_actors_exploit_at_the_growing_epochs_only(ray_session, tmp_path, synch):
    """4 members on the session's 2 CPUs: synchronous turns, and asynchronous with the guard."""
    _, exploits = run_growing(tmp_path, trainable=f"{Path(synthetic.__file__)}:QuadraticTrainer",
                              trainer={"samples": 256}, resources={"cpu": 1},
                              search={"lr": {"low": 0.001, "high": 0.5}, "momentum": {"low": 0.0, "high": 0.5}},
                              population={"pack": 1, "synch": synch})
    assert exploits
    assert {e["member_epoch"] for e in exploits} <= set(GROWING_EPOCHS)
    if synch:  # every member is ranked at each perturbation: the bottom half copies each time
        assert sorted(e["member_epoch"] for e in exploits) == sorted(2 * GROWING_EPOCHS)
