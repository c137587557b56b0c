"""Experiments stopped by an older pbt still resume: Tune unpickles the scheduler and callbacks of
`tuner.pkl` by the module paths they had when it was written (see `tests/data/legacy/README.md`)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from resumed import assert_resumed_to_completion

from pbt.cli import main

pytestmark = pytest.mark.slow

LEGACY = Path(__file__).parent / "data" / "legacy"


def reports(folder: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (folder / arm / "reports.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("engine", ["packed", "actors"])
def test_an_experiment_stopped_before_the_move_resumes_after_it(engine, ray_session, tmp_path):
    folder = tmp_path / engine
    shutil.copytree(LEGACY / engine, folder)
    before = reports(folder, "pbt")

    printed = tmp_path / "stdout.txt"
    with printed.open("w") as stream, contextlib.redirect_stdout(stream):  # Tune pickles the progress line's stream
        assert main(["resume", str(folder)]) == 0
    out = printed.read_text()
    assert "Resuming" in out and "Best member" in out and "Best grid point" in out

    assert_resumed_to_completion(before, reports(folder, "pbt"), members=4, epochs=12)
    lineage = json.loads((folder / "lineage.json").read_text())
    assert [entry["epoch"] for entry in lineage["best"]["schedule"]] == list(range(1, 13))
    assert {report["epoch"] for report in reports(folder, "grid")} == set(range(1, 13))
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["arms"]) == {"pbt", "grid"}
