"""How long `pbt` takes to answer when it trains nothing: `--help`, `--version`, bare `pbt`, and a
mistake in the config (a bad override, a missing file). Each is timed in a fresh process, as a
user runs it (the `pbt` console script beside this Python), several times; the median is printed.

    python scripts/bench_cli_start.py                 # from the repository root (configs/ is read from there)
    python scripts/bench_cli_start.py --repeats 11

To time another checkout (e.g. a worktree of an older commit), run from inside it with it first on
the path: `cd /tmp/cli_before && PYTHONPATH=/tmp/cli_before python /work/main/scripts/bench_cli_start.py`.
The first line says which `pbt` package was timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    ("pbt --help", ["--help"]),
    ("pbt --version", ["--version"]),
    ("pbt", []),
    ("pbt run configs/mnist1d.yaml population.size=1", ["run", "configs/mnist1d.yaml", "population.size=1"]),
    ("pbt run missing.yaml", ["run", "missing.yaml"]),
]


def time_command(command: list[str], repeats: int) -> tuple[list[float], int, str]:
    """Wall-clock seconds of each run (after one untimed run that warms the file cache), the exit
    code, and the last line the command printed."""
    subprocess.run(command, capture_output=True, timeout=300)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        seconds.append(time.perf_counter() - started)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument("--pbt", default=str(Path(sys.executable).parent / "pbt"), help="the console script to run")
    args = parser.parse_args()
    where = subprocess.run([sys.executable, "-c", "import pbt; print(pbt.__file__)"], capture_output=True, text=True).stdout.strip()
    print(f"pbt package: {where}; console script: {args.pbt}; {args.repeats} runs each, median "
          f"(min-max); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print(f"\n{'command':<50} {'median':>8} {'min-max':>13}  exit  last line")
    for label, words in CASES:
        seconds, code, last = time_command([args.pbt, *words], args.repeats)
        spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
        print(f"{label:<50} {statistics.median(seconds):>6.2f} s {spread:>11} s  {code:>4}  {last[:70]}")


if __name__ == "__main__":
    main()
