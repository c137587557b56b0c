"""`scripts/calibrate_range.py` on stored sweeps it did not run: its tables, and the replicate
report that says how far a second seed's brute force agrees with the first's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def curve() -> dict:
    """A range-test curve that falls from 2.3 around lr 3e-3, is lowest near 0.1 and climbs back above 1."""
    lrs = np.geomspace(1e-6, 10, 120)
    x = np.log10(lrs)
    losses = 2.3 - 1.8 / (1 + np.exp(-3 * (x + 2.5))) + 6 * np.clip(x + 1, 0, None) ** 2
    stop = int(np.argmax(losses > 3.0))
    return {"lrs": lrs[:stop].tolist(), "losses": losses[:stop].tolist(), "lr_low": 0.01, "lr_high": 0.02, "suggestion": 0.014}


def band(low: float, high: float, fastest: float, reached: int = 3) -> dict:
    return {"reached": reached, "runs": 29, "low": low, "high": high, "outside": [],
            "fastest": {"lr": fastest, "epochs_to_target": 4, "seconds_to_target": 1.0}}


def write_sweep(out: Path, folder: str, bands: dict[str, dict]) -> None:
    optimizers = {name: {"band": found, "range_test": curve(), "runs": [{"lr": 1.0, "status": "diverged"}]}
                  for name, found in bands.items()}
    path = out / "results" / folder / "sweep.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"widths": [{"optimizers": optimizers}]}))


def calibrate(out: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "calibrate_range.py"), "--out", str(out), "--report-only",
                           "--families", "mnist1d_mlp", "--batches", "32", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_replicate_report_counts_how_often_a_second_seed_agrees_with_the_first(tmp_path):
    write_sweep(tmp_path, "mnist1d_mlp_b32", {"sgd+momentum": band(0.01, 0.1, 0.0316), "adam": band(0.001, 0.00316, 0.00316)})
    # Seed 1: SGD's fastest rate moved one grid step (1.78x), Adam's two (3.16x, out of its band).
    write_sweep(tmp_path, "mnist1d_mlp_b32_s1", {"sgd+momentum": band(0.01, 0.1, 0.0562), "adam": band(0.00316, 0.0316, 0.01)})
    report = calibrate(tmp_path, "--replicate", "1")
    assert "Seed 1 against seed 0, over the 2 cells with a band at both:" in report
    assert "seed 1's fastest rate is within 2x of seed 0's in 1/2 (50%)" in report
    assert "centred on seed 1's fastest rate lies inside seed 0's band in 1/2 (50%)" in report
    # Both seeds share one range-test curve here, so the rule's range did not move between them.
    assert "its lr_high moved by a median 1.00x between the seeds (at most 1.00x)" in report
    assert "- today's rule on each seed's own range tests and sweeps: inside " in report
    assert "(seed 0, seed 1): what chance moves a score by" in report


def test_the_replicate_report_says_when_no_cell_has_a_band_at_both_seeds(tmp_path):
    write_sweep(tmp_path, "mnist1d_mlp_b32", {"adam": band(0.001, 0.00316, 0.00316)})
    write_sweep(tmp_path, "mnist1d_mlp_b32_s2", {"adam": {**band(0.001, 0.001, 0.001), "low": None, "high": None, "fastest": None}})
    assert "No cell has a band at both seed 0 and seed 2" in calibrate(tmp_path, "--replicate", "2")


def test_the_tables_score_each_cell_against_its_band(tmp_path):
    write_sweep(tmp_path, "mnist1d_mlp_b32", {"sgd+momentum": band(0.01, 0.1, 0.0178), "adam": band(0.1, 0.3, 0.2)})
    report = calibrate(tmp_path)
    rows = [line for line in report.splitlines() if line.startswith("| mnist1d_mlp | 32 |")]
    assert len(rows) == 4, report  # each optimizer, as the sweeps ran and with today's rule
    # As the sweeps ran, the stored range [0.01, 0.02] lies inside SGD's band and its suggestion 0.014 is
    # within 2x of SGD's fastest rate; neither holds for Adam.
    assert rows[0].endswith("| yes | yes |") and "| sgd+momentum |" in rows[0]
    assert rows[1].endswith("| no | no |") and "| adam |" in rows[1]
    assert "range inside the band in 1/2 cells (50%)" in report


def test_bands_are_re_derived_at_a_lower_target_from_the_stored_reports(tmp_path):
    # mnist1d_mlp's target is 50% in 30 epochs. Only lr 0.01 reached it; the best accuracy any run
    # had after epoch 1 (1/30 of the budget) is 45%, which lr 0.001 reaches too, at epoch 10.

    write_sweep(tmp_path, "mnist1d_mlp_b32", {"adam": band(0.01, 0.01, 0.01, reached=1)})
    def report(lr: float, epoch: int, acc: float, diverged: bool = False) -> dict:
        return {"label": f"001 adam lr={lr:.3g}", "lr": lr, "epoch": epoch, "val_acc": None if diverged else acc,
                "diverged": diverged, "compute_seconds": 0.1}
    slow = [report(0.001, epoch, 0.3 + 0.016 * (epoch - 1)) for epoch in range(1, 31)]
    fast = [report(0.01, 1, 0.45), report(0.01, 2, 0.55)]
    reports = tmp_path / "results" / "mnist1d_mlp_b32" / "sweep" / "reports.jsonl"
    reports.parent.mkdir()
    reports.write_text("".join(json.dumps(r) + "\n" for r in [*slow, *fast, report(0.1, 1, 0.0, diverged=True)]))
    lowered = calibrate(tmp_path, "--target-epochs", "0.034")
    assert "mnist1d_mlp batch 32: target 0.450 (the best run's at 0.034 of 30 epochs; the family's own 0.5)" in lowered
    rows = [line for line in lowered.splitlines() if line.startswith("| mnist1d_mlp | 32 | adam |")]
    assert rows and all("| [0.001, 0.01] (2) | 0.01 |" in row for row in rows), lowered
    assert all("| [0.01, 0.01] (1) | 0.01 |" in row for row in calibrate(tmp_path).splitlines()
               if row.startswith("| mnist1d_mlp | 32 | adam |"))
