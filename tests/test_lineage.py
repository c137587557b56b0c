"""Lineage from Ray's policy log, the best schedule, and replay."""

from __future__ import annotations

import json
from pathlib import Path

import synthetic

from pbt.config import validate_config
from pbt.stages.lineage import format_schedule, read_exploits, replay, schedule_rows


def _policy_line(member: int, donor: int, epoch: int, donor_hp: dict, new_hp: dict) -> str:
    return json.dumps([f"{member}_tag", f"{donor}_tag", epoch, epoch,
                       {"member": donor, **donor_hp}, {"member": member, **new_hp}])


def test_exploits_are_read_back_in_order(tmp_path):
    hp = lambda lr, m=0.9, wd=1e-4: {"lr": lr, "momentum": m, "weight_decay": wd}  # noqa: E731
    lines = [
        _policy_line(2, 0, 4, hp(0.02), hp(0.024)),
        _policy_line(3, 1, 4, hp(0.03, 0.9), hp(0.03, 0.85)),
        _policy_line(2, 3, 8, hp(0.03, 0.85), hp(0.036, 0.85, 8e-5)),
    ]
    (tmp_path / "pbt_global.txt").write_text("\n".join(lines) + "\n")
    exploits = read_exploits((tmp_path / "pbt_global.txt").read_text())
    assert [(e["member"], e["donor"], e["epoch"]) for e in exploits] == [(2, 0, 4), (3, 1, 4), (2, 3, 8)]
    assert exploits[0]["changes"]["lr"] == [0.02, 0.024]
    assert exploits[2]["changes"]["weight_decay"] == [1e-4, 8e-5]
    assert read_exploits(None) == []  # no exploit yet: Ray wrote no policy log


SCHEDULE = [
    {"epoch": 1, "member": 0, "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "val_acc": 0.5},
    {"epoch": 2, "member": 0, "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "val_acc": 0.6},
    {"epoch": 3, "member": 2, "lr": 0.024, "momentum": 0.9, "weight_decay": 1e-4, "val_acc": 0.7},
    {"epoch": 4, "member": 2, "lr": 0.0192, "momentum": 0.88, "weight_decay": 1e-4, "val_acc": 0.8},
]


def test_schedule_rows_merge_unchanged_epochs():
    rows = schedule_rows(SCHEDULE)
    assert [(r["first_epoch"], r["last_epoch"], r["member"], r["lr"]) for r in rows] == [
        (1, 2, 0, 0.02), (3, 3, 2, 0.024), (4, 4, 2, 0.0192)
    ]
    assert rows[0]["val_acc"] == 0.6  # the accuracy at the end of the merged epochs
    table = format_schedule(SCHEDULE)
    assert "1-2" in table and "member 2" in table and len(table.splitlines()) == 4


def test_replay_trains_with_the_recorded_schedule():
    config = validate_config({"trainable": f"{Path(synthetic.__file__)}:QuadraticTrainer"})
    seen = []
    records = replay(config, SCHEDULE, on_epoch=lambda i, n, m: seen.append((i, n)))
    assert [r["lr_used"] for r in records] == [e["lr"] for e in SCHEDULE]
    assert [r["momentum_used"] for r in records] == [e["momentum"] for e in SCHEDULE]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
