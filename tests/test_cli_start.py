"""`pbt` answers at once where it needs no training: `--help`, `--version`, bare `pbt` and a mistake
in the config load neither torch nor Ray (they take seconds); `import pbt` keeps its public names.

Each case runs in a fresh interpreter and reports which heavy packages it loaded: what makes the
start fast, checked without timing anything (scripts/bench_cli_start.py times it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "pyarrow", "numpy", "matplotlib", "tensorboard")
COMMANDS = ("lr-find", "run", "pbt", "grid", "sweep", "compare", "resume", "replay")

# Runs `pbt ARGS...` as the console script does, and writes which heavy packages were loaded when
# the process ended (argparse's --help and --version end it with SystemExit).
RUNNER = f"""
import atexit, json, os, sys
def loaded():
    with open(os.environ["PBT_LOADED"], "w") as file:
        json.dump(sorted(name for name in {HEAVY!r} if name in sys.modules), file)
atexit.register(loaded)
from pbt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def pbt(tmp_path: Path, *args: str) -> tuple[int, str, str, list[str]]:
    """Exit code, stdout, stderr, and the heavy packages `pbt ARGS` loaded."""
    loaded = tmp_path / "loaded.json"
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PBT_LOADED": str(loaded)})
    return done.returncode, done.stdout, done.stderr, json.loads(loaded.read_text())


@pytest.mark.parametrize("module", ["pbt", "pbt.cli"])
def test_importing_pbt_or_its_command_loads_no_heavy_package(module):
    code = f"import sys, {module}; print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_lists_every_command_without_loading_torch_or_ray(tmp_path):
    code, out, err, loaded = pbt(tmp_path, "--help")
    assert code == 0 and err == "" and loaded == []
    assert out.startswith("usage: pbt ") and "--version" in out
    for command in COMMANDS:
        assert f"\n    {command} " in out, command


def test_version_prints_the_installed_version(tmp_path):
    code, out, err, loaded = pbt(tmp_path, "--version")
    assert (code, out, err, loaded) == (0, f"pbt {importlib.metadata.version('pbt')}\n", "", [])


def test_bare_pbt_prints_the_command_list_as_a_usage_error(tmp_path):
    # Nothing was asked for, so nothing ran: exit 2 as for any usage error (a script that calls
    # `pbt $EMPTY` must fail), and the help on stderr, as argparse prints its usage errors.
    code, out, err, loaded = pbt(tmp_path)
    _, help_text, _, _ = pbt(tmp_path, "--help")
    assert (code, out, loaded) == (2, "", [])
    assert err == help_text


@pytest.mark.parametrize("args, message", [
    (["run", str(REPO / "configs" / "mnist1d.yaml"), "population.size=1"],
     "pbt: error: population.size: Input should be greater than or equal to 2, but got 1\n"),
    (["lr-find", "missing.yaml"], "pbt: error: config file 'missing.yaml' does not exist\n"),
    (["sweep", str(REPO / "configs" / "mnist1d.yaml"), "sweep.rates=many"],
     "pbt: error: sweep.rates: Input should be a valid integer, unable to parse string as an integer, but got 'many'\n"),
    (["sweep", str(REPO / "configs" / "mnist1d.yaml"), "--widths", "1,x"],
     "pbt: error: --widths takes numbers separated by commas, e.g. 1,2,4,8, but got '1,x'\n"),
], ids=["population.size=1", "missing config file", "bad sweep override", "bad --widths"])
def test_a_config_mistake_is_one_line_before_torch_or_ray_load(tmp_path, args, message):
    code, out, err, loaded = pbt(tmp_path, *args, f"storage_path={tmp_path / 'results'}")
    assert (code, out, err, loaded) == (2, "", message, [])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["loaded.json"]  # nothing written


def test_the_public_names_load_when_used():
    code = """
import sys
import pbt
from pbt.moved import OldPathFinder
assert any(isinstance(finder, OldPathFinder) for finder in sys.meta_path), "old module paths must resolve at import"
assert "torch" not in sys.modules
from pbt import RangeSweep, RangeTest, Trainer
from pbt.trainer import Trainer as Defined
assert Trainer is Defined and RangeSweep is RangeTest and "torch" in sys.modules
for name in pbt.__all__:
    assert getattr(pbt, name) is not None and name in dir(pbt), name
try:
    pbt.no_such_name
except AttributeError as err:
    assert "no_such_name" in str(err)
else:
    raise AssertionError("an unknown name must raise AttributeError")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
