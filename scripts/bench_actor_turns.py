"""The actor engine with more members than slots: what each way of taking turns costs in wall time.

`pbt pbt` on MNIST-1D with `population.pack=1` (one Ray actor per member), more members than this
machine has slots, the range test skipped (`search.lr` given), run as a subprocess per variant,
alternating variants round by round so that a noisy machine hits them alike:

- `synch`: Ray's synchronous PBT (the default since issue 28): every member ranked at one epoch;
- `asynch`: Ray's asynchronous PBT with pbt's guard (a member never copies a donor behind it);
- `before` (with `--before DIR`, a checkout of the code before issue 28): asynchronous PBT as it
  was, whose copiers could restore a donor's older checkpoint and train epochs again.

For each it prints the wall time (median over rounds and the ratio to `synch`), epochs trained
against the budget, member-epochs trained more than once, and the best member's validation
accuracy.

    python scripts/bench_actor_turns.py --rounds 2 --before /tmp/today
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_variant(name: str, code: Path, synch: bool, storage: Path, args: argparse.Namespace, round_: int) -> dict:
    """One `pbt pbt` in a fresh process; its wall time and what its reports say."""
    folder = f"{name}{round_}"
    command = [sys.executable, "-m", "pbt", "pbt", str(code / "configs" / "mnist1d.yaml"),  # the config of that code
               f"name={folder}", f"storage_path={storage}", "population.pack=1", f"population.size={args.members}",
               f"population.epochs={args.epochs}", f"population.synch={str(synch).lower()}",
               "search.lr.low=0.01", "search.lr.high=0.1", f"seed={round_}"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    reports = [json.loads(line) for line in (storage / folder / "pbt" / "reports.jsonl").read_text().splitlines()]
    repeated = sum(n - 1 for n in Counter((r["label"], r["epoch"]) for r in reports).values())
    lineage = json.loads((storage / folder / "lineage.json").read_text())
    return {"seconds": seconds, "executed": sum(r["epochs_executed"] for r in reports), "repeated": repeated,
            "exploits": len(lineage["exploits"]), "best_val": lineage["best"]["final_val_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the code before issue 28")
    args = parser.parse_args()
    variants = [("synch", REPO, True), ("asynch", REPO, False)]
    if args.before:
        variants.append(("before", args.before.resolve(), False))
    storage = Path(tempfile.mkdtemp(prefix="bench_actor_turns_"))
    print(f"MNIST-1D, {args.members} members x {args.epochs} epochs, population.pack=1, {os.cpu_count()} CPUs "
          f"(1 per member); {args.rounds} rounds; folders in {storage}", flush=True)
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    for round_ in range(args.rounds):
        for name, code, synch in variants:
            row = run_variant(name, code, synch, storage, args, round_)
            rows[name].append(row)
            print(f"round {round_} {name:7s} {row['seconds']:6.1f} s  {row['executed']}/{args.members * args.epochs} "
                  f"epochs trained, {row['repeated']} trained again, {row['exploits']} exploits, "
                  f"best val acc {row['best_val']:.4f}", flush=True)
    base = statistics.median(r["seconds"] for r in rows["synch"])
    print("\nvariant  median s  / synch  epochs trained again (all rounds)  best val acc (mean)")
    for name, runs in rows.items():
        median = statistics.median(r["seconds"] for r in runs)
        print(f"{name:7s}  {median:8.1f}  {median / base:6.2f}  {sum(r['repeated'] for r in runs):>10}"
              f"{'':26s}{statistics.mean(r['best_val'] for r in runs):.4f}")


if __name__ == "__main__":
    main()
