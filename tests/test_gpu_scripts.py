"""The GPU scripts on a machine without one: `scripts/gpu_check.sh` says so in one line, and
`scripts/bench_gpu_packed.py` at least imports and explains itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs every GPU check (pytest -m cuda among them)")
def test_gpu_check_says_in_one_line_that_it_needs_a_cuda_gpu_and_exits_2(tmp_path):
    script = REPO / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, "the script parses"
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "gpu_check.sh: needs a CUDA GPU (torch.cuda.is_available() is False here, or torch is missing); nothing was run"]
    assert not (tmp_path / "out").exists(), "nothing written"


def test_the_gpu_benchmark_imports_and_explains_itself_on_the_cpu():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_gpu_packed.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--capture" in done.stdout and "--packs" in done.stdout
