"""What both engines share: the metric members are chosen by, their checkpoint files, and each
member's view of a Tune result (an actor's result is one member's; a pack's holds one per member)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pbt.config import PopulationConfig
from pbt.engines import EXPLOIT_LOGGER  # noqa: F401  (the schedulers import it from here)
from pbt.errors import PbtError
from pbt.optim import HYPERPARAMS

STATE_FILE = "member.pt"
METRIC = "val_acc"  # selection uses the validation split; test accuracy is only reported
RANK_SCORE = "rank_score"  # what PBT ranks members by: val_acc, a cooldown probe's (`population.probe`) or with its rise
PROBE_EPOCHS = "probe_epochs"  # the share of an epoch a report's probe trained: compute, though not an epoch of training
WORST_SCORE = 0.0  # what a diverged member reports, so that it is the first to be replaced
PACK_FILE = "pack.pt"
MEMBERS = "members"  # the key of a pack's result that holds one report per member


def improvement_score(population: PopulationConfig, history: list[dict[str, Any]], epoch: int, val_acc: float) -> float:
    """What a member is ranked by with `population.improvement_weight`: its validation accuracy plus
    the weight times its rise since the previous perturbation, read from its lineage's `history`
    (a member that copied a donor then continues the donor's lineage); its accuracy alone where the
    lineage holds no earlier reading."""
    since = population.previous_perturbation(epoch)
    earlier = [entry[METRIC] for entry in history if entry["epoch"] <= since]
    if not earlier or not math.isfinite(earlier[-1]):
        return val_acc
    return val_acc + population.improvement_weight * (val_acc - earlier[-1])


def gpu_memory(device: torch.device) -> dict[str, float]:
    """On CUDA: the most memory PyTorch has held in this process so far and the GPU's total, in MiB
    (reported after a member's first epoch, to size `resources.gpu`); nothing on the CPU."""
    if device.type != "cuda":
        return {}
    return {
        "gpu_peak_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        "gpu_total_mib": torch.cuda.get_device_properties(device).total_memory / 2**20,
    }


def load_member_state(checkpoint_dir: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A member checkpoint, read without running any pickled code (`weights_only=True`)."""
    return read_checkpoint_file(Path(checkpoint_dir) / STATE_FILE, device, {"trainer", "history", "diverged"}, "member")


def read_checkpoint_file(path: Path, device: torch.device | str, keys: set[str], kind: str) -> dict[str, Any]:
    """A pbt checkpoint file (`weights_only=True`: no pickled code runs) holding at least `keys`;
    a missing, damaged or foreign file is one `PbtError` line."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise PbtError(f"checkpoint {str(path)!r} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise PbtError(
            f"checkpoint {str(path)!r} is damaged or not a pbt checkpoint, so it was not loaded "
            f"({str(err).splitlines()[0][:160]})"
        ) from None
    if not isinstance(state, dict) or not keys <= set(state):
        raise PbtError(f"checkpoint {str(path)!r} is not a pbt {kind} checkpoint (it lacks {', '.join(sorted(keys))})")
    return state


def load_pack_state(checkpoint_dir: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A pack checkpoint, read without running any pickled code (`weights_only=True`)."""
    return read_checkpoint_file(Path(checkpoint_dir) / PACK_FILE, device, {"members", "pack", "histories", "plan_epoch"}, "pack")


def is_pack_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / PACK_FILE).is_file()


def load_checkpoint_state(folder: str | Path) -> dict[str, Any]:
    """The state in a checkpoint folder of either engine: a pack's or a member's."""
    return load_pack_state(folder) if is_pack_checkpoint(folder) else load_member_state(folder)


def member_reports(config: dict[str, Any], result: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A trial's result as (member config, member result) pairs: itself for an actor, one per member
    for a pack. A member's config is what an actor's would be: `member`, its hyperparameters, and
    `optimizer` in a grid over optimizers."""
    if MEMBERS not in result:
        yield config, result
        return
    shared = {key: result[key] for key in ("training_iteration", "node_id") if key in result}
    for report in member_results_of(result):
        member_config = {"member": report["member"], **{name: report[name] for name in HYPERPARAMS}}
        if "optimizer" in config:
            member_config["optimizer"] = config["optimizer"]
        yield member_config, {**report, **shared}


def member_results_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-member reports of a trial's result (a pack's members; an actor's result itself)."""
    return list(result[MEMBERS].values()) if MEMBERS in result else [result]


def member_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A trial's config as the configs of its members (an actor's: itself)."""
    if "members" not in config:
        return [config]
    extra = {"optimizer": config["optimizer"]} if "optimizer" in config else {}
    return [{"member": member, **values, **extra} for member, values in zip(config["members"], config["hyperparams"])]


@dataclass(frozen=True)
class MemberResult:
    """One member's part of a Tune result, shaped like the result of an actor: `config` (member and
    hyperparameters), its last `metrics`, and the `checkpoint` that holds it (its pack's)."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    checkpoint: Any


def member_results(results: Iterable[Any]) -> list[Any]:
    """Tune results of an arm as one result per member: packs split, actors' results as they are."""
    members: list[Any] = []
    for result in results:
        metrics = result.metrics or {}
        if MEMBERS in metrics:
            members += [MemberResult(config, report, result.checkpoint) for config, report in member_reports(result.config, metrics)]
        elif "members" in (result.config or {}):  # a pack that failed before its first report (an actor that died at creation: no config)
            members += [MemberResult(config, {}, result.checkpoint) for config in member_configs(result.config)]
        else:
            members.append(result)
    return members
