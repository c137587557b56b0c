"""More members than slots on the actor engine: members take turns, and none goes back in time.

With 6 members on 2 slots, Ray's PBT pauses members so that they take turns. Asynchronous PBT
ranked a member against the others' last scores and restored a donor's last checkpoint even when
it was older than the copier's own epoch: the copier trained those epochs again, the same exploit
was printed and recorded again, and the progress line passed its total (issue 28). These runs
check, through `pbt pbt`, that every member reports each epoch once, that a copier continues at
its donor's epoch or later, that each exploit is printed and recorded once, and that the progress
line never passes its total: in the default (synchronous) mode and in the asynchronous one.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import synthetic
import yaml

from pbt.cli import main

pytestmark = pytest.mark.slow

MEMBERS, EPOCHS, INTERVAL = 6, 8, 2


@pytest.fixture(scope="module", params=["synch", "asynch"])
def taking_turns(request, ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    config = root / "turns.yaml"
    config.write_text(yaml.safe_dump({
        "name": "turns",
        "storage_path": str(root / "results"),
        "trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer",
        "trainer": {"samples": 512},
        "search": {"lr": {"low": 0.001, "high": 0.5}, "momentum": {"low": 0.0, "high": 0.5}},
        "population": {"size": MEMBERS, "epochs": EPOCHS, "perturbation_interval": INTERVAL,
                       "quantile_fraction": 0.34, "pack": 1, "synch": request.param == "synch"},
        "resources": {"cpu": 1},  # the session's Ray has 2 CPUs: 2 slots for 6 members
        "seed": 3,
    }))
    out = root / "stdout.txt"
    with out.open("w") as stream, contextlib.redirect_stdout(stream):
        code = main(["pbt", str(config)])
    folder = root / "results" / "turns"
    reports = [json.loads(line) for line in (folder / "pbt" / "reports.jsonl").read_text().splitlines()]
    return code, out.read_text(), reports, json.loads((folder / "lineage.json").read_text())


def test_every_member_reports_each_epoch_once(taking_turns):
    code, out, reports, _ = taking_turns
    assert code == 0, out
    epochs = Counter((r["label"], r["epoch"]) for r in reports)
    assert max(epochs.values()) == 1, f"epochs trained again: {[k for k, n in epochs.items() if n > 1]}"
    assert len({r["label"] for r in reports}) == MEMBERS
    assert all(max(r["epoch"] for r in reports if r["label"] == label) == EPOCHS for label in {r["label"] for r in reports})


def test_a_copier_never_restores_a_state_older_than_its_own(taking_turns):
    code, out, reports, lineage = taking_turns
    assert lineage["exploits"], "6 members over 3 perturbations: someone is in the bottom third"
    for exploit in lineage["exploits"]:
        assert exploit["epoch"] >= exploit["member_epoch"], exploit
        assert exploit["epoch"] % INTERVAL == 0 and exploit["member_epoch"] % INTERVAL == 0, exploit


def test_each_exploit_is_printed_and_recorded_once(taking_turns):
    code, out, reports, lineage = taking_turns
    printed = re.findall(r"member (\d+) copies member (\d+) \(epoch (\d+)\)", out)
    assert len(printed) == len(set(printed)) == len(lineage["exploits"])
    recorded = [(e["member"], e["member_epoch"]) for e in lineage["exploits"]]
    assert len(recorded) == len(set(recorded)), "a member is exploited at most once per perturbation epoch"


def test_the_progress_line_never_passes_its_total(taking_turns):
    code, out, reports, _ = taking_turns
    lines = re.findall(r"(\d+)/(\d+) epochs trained", out)
    assert lines
    assert all(int(done) <= int(total) for done, total in lines), lines
    assert sum(r["epochs_executed"] for r in reports) <= MEMBERS * EPOCHS
