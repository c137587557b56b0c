"""What PBT did: who copied whom (Ray's policy log), each member's result, and the best schedule.

Ray writes every exploit to `pbt_global.txt` as `[member tag, donor tag, member iteration, donor
iteration, donor config, new config]`; pbt keeps a copy of each line in `exploits.jsonl`, which
unlike Ray's file survives `pbt resume`. The per-epoch schedule of the best member comes from the
history that travels inside member checkpoints (see `pbt.engines.actor.trainable`), so it stays whole across
any number of exploits. `replay` retrains that schedule from scratch as one run; `replay_experiment` is `pbt replay`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pbt.config import ExperimentConfig, load_saved_config, read_json
from pbt.engines.common import METRIC, is_pack_checkpoint, load_member_state, load_pack_state, member_results
from pbt.engines.scheduled import train_scheduled_epoch
from pbt.optim import HYPERPARAMS, set_hyperparams, shown_hyperparams
from pbt.registry import build_trainer
from pbt.reporting.console import upload
from pbt.storage.checks import open_experiment
from pbt.storage.layout import LINEAGE_FILE, REPLAY_FILE
from pbt.storage.store import shown
from pbt.trainer import count_epoch_steps, evaluation

log = logging.getLogger(__name__)


def read_exploits(policy_log: str | None) -> list[dict[str, Any]]:
    """Every exploit in the text of Ray's policy log (None: no exploit yet), in the order it happened:
    member, donor, epoch, and each hyperparameter's change."""
    exploits = []
    for line in (policy_log or "").splitlines():
        if not line.strip():
            continue
        _, _, member_iteration, donor_iteration, donor_config, new_config = json.loads(line)
        exploits.append({
            "member": new_config["member"],
            "donor": donor_config["member"],
            "epoch": donor_iteration,  # the clone continues from the donor's weights after this epoch
            "member_epoch": member_iteration,
            "changes": {name: [donor_config[name], new_config[name]] for name in HYPERPARAMS},
        })
    return exploits


def build_lineage(results: list[Any], policy_log: str | None) -> dict[str, Any]:
    """`lineage.json`: per member its exploits and final metrics; the best member's full schedule.

    `results` are Ray Tune results (`.config`, `.metrics`, `.checkpoint`); `policy_log` is the text
    of Ray's `pbt_global.txt`. The best member is chosen by its final validation accuracy; its test
    accuracy is only reported.
    """
    exploits = read_exploits(policy_log)
    members, checkpoints = [], {}
    for result in sorted(member_results(results), key=lambda r: r.config["member"]):
        member = result.config["member"]
        metrics = result.metrics or {}
        members.append({
            "member": member,
            "final_val_acc": metrics.get(METRIC),
            "final_test_acc": metrics.get("test_acc"),
            "final_hyperparams": {name: result.config[name] for name in HYPERPARAMS},
            "exploits": [e for e in exploits if e["member"] == member],
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
        })
        checkpoints[member] = result.checkpoint
    ranked = [m for m in members if m["final_val_acc"] is not None and math.isfinite(m["final_val_acc"])]
    if not ranked:
        raise RuntimeError("no member of the population reported a validation accuracy")
    best = max(ranked, key=lambda m: m["final_val_acc"])
    schedule = []
    if checkpoints[best["member"]] is not None:
        with checkpoints[best["member"]].as_directory() as folder:  # a download when the storage is remote
            schedule = read_history(folder, best["member"])
    return {
        "metric": METRIC,
        "best": {**best, "schedule": schedule},
        "members": members,
        "exploits": exploits,
    }


def read_history(folder: str | Path, member: int) -> list[dict[str, Any]]:
    """The hyperparameters of every epoch `member`'s lineage trained, from its checkpoint (an actor's
    or its pack's)."""
    if is_pack_checkpoint(folder):
        state = load_pack_state(folder)
        return state["histories"][list(state["members"]).index(member)]
    return load_member_state(folder)["history"]


def schedule_rows(schedule: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The schedule with runs of unchanged hyperparameters merged: `epochs 1-4, member 3, lr ...`."""
    rows: list[dict[str, Any]] = []
    for entry in schedule:
        same = rows and all(rows[-1][k] == entry[k] for k in ("member", *HYPERPARAMS))
        if same:
            rows[-1]["last_epoch"] = entry["epoch"]
            rows[-1][METRIC] = entry[METRIC]
        else:
            rows.append({**entry, "first_epoch": entry["epoch"], "last_epoch": entry["epoch"]})
    return rows


# Each hyperparameter's column in `format_schedule`: heading, width, number format.
SCHEDULE_COLUMNS = {
    "lr": ("lr", 9, ".4g"), "momentum": ("momentum", 8, ".3f"), "weight_decay": ("weight decay", 12, ".3g"),
}


def format_schedule(schedule: list[dict[str, Any]]) -> str:
    """The schedule as a table, one row per run of unchanged hyperparameters (no momentum column
    where every epoch had none)."""
    columns = {name: SCHEDULE_COLUMNS[name] for name in shown_hyperparams(schedule)}
    heading = "".join(f"  {title:>{width}}" for title, width, _ in columns.values())
    lines = [f"{'epochs':>9}  {'trained by':>10}{heading}  {'val acc at end':>14}"]
    for row in schedule_rows(schedule):
        epochs = f"{row['first_epoch']}-{row['last_epoch']}" if row["last_epoch"] > row["first_epoch"] else str(row["first_epoch"])
        values = "".join(f"  {row[name]:>{width}{spec}}" for name, (_, width, spec) in columns.items())
        lines.append(f"{epochs:>9}  {'member ' + str(row['member']):>10}{values}  {row[METRIC]:>14.4f}")
    return "\n".join(lines)


def replay(
    config: ExperimentConfig,
    schedule: list[dict[str, Any]],
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train one fresh model through `schedule`, epoch by epoch; returns every epoch's metrics.

    The run starts from the seed of the member the schedule began with. It cannot reproduce the
    population's run exactly (PBT moved weights between members with other batch orders), so the
    comparison says how much of PBT's result the schedule alone explains.
    """
    trainer = build_trainer(config, seed=config.seed + schedule[0]["member"])
    steps = count_epoch_steps(trainer) if not config.schedule.constant else 1
    records = []
    for index, entry in enumerate(schedule):
        hyperparams = {name: entry[name] for name in HYPERPARAMS}
        set_hyperparams(trainer.optimizer, **hyperparams)
        # Each epoch's peak under the experiment's schedule, from the epoch's global step, as the member trained it.
        done = train_scheduled_epoch(trainer, config.schedule, hyperparams, (entry["epoch"] - 1) * steps,
                                     config.population.epochs * steps)
        metrics = done.metrics
        metrics.update(evaluation(trainer) if math.isfinite(metrics["train_loss"]) else {METRIC: 0.0})
        metrics.update(hyperparams, epoch=entry["epoch"], lr_trained=done.mean_lr)
        records.append(metrics)
        if on_epoch:
            on_epoch(index + 1, len(schedule), metrics)
    return records


def replay_experiment(location: str) -> int:
    """`pbt replay`: retrain the best member's schedule of an experiment, print it beside PBT's
    result and write `replay.json`."""
    storage = open_experiment(location)
    folder = storage.local
    config = load_saved_config(folder)
    best = read_json(folder / LINEAGE_FILE)["best"]
    schedule = best["schedule"]
    print(f"Replaying member {best['member']}'s schedule: {len(schedule)} epochs from scratch, one run")
    records = replay(config, schedule, on_epoch=lambda i, n, m: print(
        f"  epoch {i:>3}/{n}  lr {m['lr']:.3g}  val acc {m['val_acc']:.4f}") if i % 5 == 0 or i == n else None)
    print()
    print(format_replay_table(best, records[-1]))
    (folder / REPLAY_FILE).write_text(json.dumps({"member": best["member"], "epochs": records}, indent=1))
    print(f"\nWrote {shown(folder / REPLAY_FILE)}")
    upload(storage)
    return 0


def format_replay_table(best: dict[str, Any], final: dict[str, float]) -> str:
    """PBT's best member beside its replay; a test column only when both have a test accuracy."""
    columns = [("val acc", best["final_val_acc"], final["val_acc"])]
    if best.get("final_test_acc") is not None and final.get("test_acc") is not None:
        columns.append(("test acc", best["final_test_acc"], final["test_acc"]))
    return "\n".join([
        f"{'':<10}" + "".join(f"{name:>10}" for name, _, _ in columns),
        f"{'PBT':<10}" + "".join(f"{pbt:>10.4f}" for _, pbt, _ in columns),
        f"{'replay':<10}" + "".join(f"{replayed:>10.4f}" for _, _, replayed in columns),
        f"{'diff':<10}" + "".join(f"{replayed - pbt:>+10.4f}" for _, pbt, replayed in columns),
    ])
