"""A live, compact view of a running population: epochs done of the budget and the best so far."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ray import tune

from pbt.engines.common import METRIC, member_configs, member_reports


class PopulationProgress(tune.Callback):
    """Prints one line when the best member improves or every `every_seconds`, never more often.

    Progress is epochs trained against the budget (runs x epochs) and runs finished. No PBT member
    trains an epoch twice (a copier continues at its donor's epoch, never behind its own), so epochs
    trained never pass the budget; asynchronous PBT (`population.synch: false`) may stay under it.
    """

    def __init__(
        self, label: str, runs: int, epochs: int, every_seconds: float = 5.0, stream: TextIO | None = None,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.label, self.runs, self.epochs, self.every = label, runs, epochs, every_seconds
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.last_print = 0.0
        # A resumed arm goes on counting from its reports before the stop (pbt.reporting.records).
        self.executed = sum(r["epochs_executed"] for r in earlier)
        self.diverged = sum(bool(r["diverged"]) for r in earlier)
        last_epochs: dict[str, int] = {}
        for report in earlier:
            last_epochs[report["label"]] = report["epoch"]
        self.finished = sum(epoch >= epochs for epoch in last_epochs.values())
        self.best: dict[str, Any] | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "gpu_peak_mib" in result:
            self.stream.write(gpu_memory_line(trial.config, result) + "\n")
        improved = False
        for config, report in member_reports(trial.config, result):
            self.executed += report.get("epochs_executed", 1)
            self.diverged += bool(report.get("diverged"))
            if self.best is None or report[METRIC] > self.best[METRIC]:
                self.best, improved = {**report, "member": config.get("member")}, True
        now = time.monotonic()
        if (improved and now - self.last_print > 1.0) or now - self.last_print > self.every:
            self.print_line(now)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += len(member_configs(trial.config))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_line(time.monotonic())

    def print_line(self, now: float) -> None:
        self.last_print = now
        best = self.best
        if best is None:
            return
        diverged = f" | {self.diverged} diverged reports" if self.diverged else ""
        momentum = f"momentum {best['momentum']:.3g}, " if best["momentum"] else ""  # 0: none (Adagrad, plain SGD)
        self.stream.write(
            f"  [{self.label} {now - self.started:4.0f} s] {self.executed:>4}/{self.runs * self.epochs} epochs trained, "
            f"{self.finished}/{self.runs} runs finished | "
            f"best val acc {best[METRIC]:.4f} (member {best['member']}, epoch {best['training_iteration']}: "
            f"lr {best['lr']:.3g}, {momentum}wd {best['weight_decay']:.2g}){diverged}\n"
        )
        self.stream.flush()


def gpu_memory_line(config: dict[str, Any], result: dict[str, Any]) -> str:
    """How much of the GPU one member (or pack) takes, to choose `resources.gpu` (see README)."""
    peak, total = result["gpu_peak_mib"], result["gpu_total_mib"]
    if "members" in config:
        captured = "; its training step replayed as a CUDA graph" if result.get("step_captured") else ""
        return (f"  [gpu] pack of members {', '.join(map(str, config['members']))}: peak GPU memory {peak:.0f} MiB of "
                f"{total / 1024:.0f} GiB after its first epoch (PyTorch's pool){captured}")
    fit = int(total // peak) if peak > 0 else 0
    return (f"  [gpu] member {config.get('member')}: peak GPU memory {peak:.0f} MiB of "
            f"{total / 1024:.0f} GiB after its first epoch (PyTorch's pool); by memory {fit} such members fit on the "
            "GPU, fewer in practice: each process also holds a CUDA context of some hundred MiB")
