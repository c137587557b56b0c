"""Ctrl-C during `pbt pbt`, twice, each time resumed: one line says how to go on, and nothing is lost.

The driver runs in its own process group and gets SIGINT as a terminal's Ctrl-C sends it: to the
whole foreground group, Ray's local processes included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

EPOCHS = 120
EXPLOIT = re.compile(r"\[pbt\] member (\d+) copies member (\d+) \(epoch (\d+)\)")
RESUME = re.compile(r"^pbt: stopped by Ctrl-C in pbt: .*epochs? [\d-]+ of 120; the results so far are kept, "
                    r"continue with: pbt resume (\S+)$", re.M)


def start(tmp_path: Path, name: str, *argv: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.out"
    driver = subprocess.Popen([sys.executable, "-m", "pbt", *argv], start_new_session=True, cwd=tmp_path,
                              env={**os.environ, "RAY_ADDRESS": ""}, stdout=out.open("w"), stderr=subprocess.STDOUT)
    return driver, out


def exploits_printed(out: Path) -> list[tuple[int, int, int]]:
    return [tuple(map(int, found)) for found in EXPLOIT.findall(out.read_text())]


def interrupt_after_exploits(driver: subprocess.Popen, out: Path, exploits: int) -> str:
    """Ctrl-C once `exploits` more exploits were printed; the driver's whole output."""
    deadline = time.monotonic() + 240
    while len(exploits_printed(out)) < exploits:
        assert driver.poll() is None, out.read_text()
        assert time.monotonic() < deadline, "no exploits within 4 minutes"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=120) == 130, out.read_text()
    return out.read_text()


def test_two_ctrl_c_and_resumes_lose_no_exploit(tmp_path):
    config = tmp_path / "interrupted.yaml"
    config.write_text(yaml.safe_dump({
        "name": "interrupted",
        "trainable": f"{Path(__file__).parent / 'stranger.py'}:StrangerTrainer",
        "storage_path": "results",
        "search": {"lr": {"low": 0.005, "high": 0.02}},
        "population": {"size": 4, "epochs": EPOCHS, "perturbation_interval": 4, "quantile_fraction": 0.25},
    }))
    folder = tmp_path / "results" / "interrupted"
    outputs = []
    for round_, argv in enumerate([("pbt", str(config)), ("resume", "results/interrupted")]):
        driver, out = start(tmp_path, f"round{round_}", *argv)
        text = interrupt_after_exploits(driver, out, exploits=3)
        outputs.append(text)
        resume = RESUME.findall(text)
        assert resume == ["results/interrupted"], text[-2000:]
        assert "Best member" not in text and not (folder / "lineage.json").exists(), "a partial run is not presented as finished"
        assert "Tuner.restore" not in text  # Tune's own advice would not work for a pbt experiment

    driver, out = start(tmp_path, "final", "resume", "results/interrupted")
    assert driver.wait(timeout=300) == 0, out.read_text()
    outputs.append(out.read_text())
    assert "Best member" in outputs[-1]

    printed = [exploit for text in outputs for exploit in EXPLOIT.findall(text)]
    lineage = json.loads((folder / "lineage.json").read_text())
    recorded = [(str(e["member"]), str(e["donor"]), str(e["epoch"])) for e in lineage["exploits"]]
    assert all(exploits_printed(Path(tmp_path / f"round{i}.out")) for i in range(2)), "exploits happened before each Ctrl-C"
    assert Counter(recorded) == Counter(printed), "lineage.json holds every exploit printed, across both resumes"
    assert [e["epoch"] for e in lineage["best"]["schedule"]] == list(range(1, EPOCHS + 1))


@pytest.mark.parametrize("reached, text", [
    ([12, 14, 14, 13], "in pbt: its 4 runs at epochs 12-14 of 40"),
    ([40, 16, 16, 40], "in pbt: 2 of 4 runs finished, the others at epoch 16 of 40"),
    ([0, 0], "in pbt: its 2 runs at epoch 0 of 40"),
])
def test_where_a_run_stopped_is_said_in_epochs(reached, text):
    from pbt.engines.tuner import progress_text

    assert progress_text("pbt", 40, [{"training_iteration": epoch} for epoch in reached]) == text


def test_the_stop_line_says_what_to_type_and_exits_like_the_shell():
    from pbt.cluster.interrupts import Interrupted, as_interrupted

    ctrl_c = as_interrupted(KeyboardInterrupt(), resume="results/x")
    assert ctrl_c.exit_code == 130
    assert ctrl_c.message() == "pbt: stopped by Ctrl-C; the results so far are kept, continue with: pbt resume results/x"
    early = as_interrupted(Interrupted(signal.SIGTERM), where="before training began: nothing to resume, run the command again")
    assert early.exit_code == 143
    assert early.message() == "pbt: stopped by SIGTERM before training began: nothing to resume, run the command again"


def test_a_resumed_arm_counts_on_from_its_reports_before_the_stop():
    from pbt.reporting.progress import PopulationProgress

    def report(label: str, epoch: int, executed: int = 1) -> dict:
        return {"label": label, "epoch": epoch, "epochs_executed": executed, "diverged": False}

    earlier = [report("member_00", 1), report("member_01", 1), report("member_00", 2), report("member_01", 2, 0)]
    progress = PopulationProgress("pbt", runs=2, epochs=2, earlier=earlier)
    assert (progress.executed, progress.finished) == (3, 2)
