"""An experiment folder holds one experiment: a command that would write into a folder holding
another kind of experiment's results (a training job, a sweep, a range test) refuses with one line
and exit code 2, writing nothing, unless `--overwrite`. A job may take over a folder holding only
a range test (its own first stage, which it runs again), and `pbt lr-find` may replace its own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import synthetic
import yaml

from pbt.cli import main
from pbt.errors import PbtError
from pbt.storage.checks import JOB, RANGE_TEST, SWEEP, check_fresh, check_unmixed, held_experiments
from pbt.storage.store import Storage

QUADRATIC = {
    "name": "quad",
    "trainable": f"{synthetic.__file__}:QuadraticTrainer",
    "trainer": {"samples": 256},
    "population": {"size": 2, "epochs": 2, "perturbation_interval": 1},
    "lr_range": {"seeds": 1, "max_steps": 30, "lr_min": 1e-4, "lr_max": 100.0, "momentum": 0.0},
    "sweep": {"optimizers": ["own"], "rates": 2, "lr_min": 0.1, "lr_max": 1.0, "max_epochs": 1, "split": "val"},
}
JOB_HELD = "already holds a training job (pbt run, pbt pbt or pbt grid)"


def write_config(tmp_path: Path, storage: Path, **changes) -> Path:
    path = tmp_path / f"quad-{len(list(tmp_path.glob('quad-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**QUADRATIC, "storage_path": str(storage), **changes}))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below `folder` with its size and modification time: what 'nothing written' compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def pbt_folder(ray_session, tmp_path_factory) -> tuple[Path, Path]:
    """The storage path and experiment folder of a finished `pbt pbt` (range test included)."""
    tmp_path = tmp_path_factory.mktemp("pbt_run")
    storage = tmp_path / "results"
    with (tmp_path / "stdout.txt").open("w") as stream, contextlib.redirect_stdout(stream):  # as test_run does
        assert main(["pbt", str(write_config(tmp_path, storage))]) == 0
    folder = storage / "quad"
    assert (folder / "lr_range.json").is_file() and (folder / "job.json").is_file() and (folder / "pbt").is_dir()
    return storage, folder


@pytest.mark.parametrize("command, extra, message", [
    ("lr-find", [], f"{JOB_HELD}, and this range test would mix into it, replacing its lr_range.json; "
                    "give the range test another name (name=...), or pass --overwrite to write there anyway"),
    ("sweep", [], f"{JOB_HELD}, and this sweep would mix into it, replacing its config.json; "
                  "give the sweep another name (name=...), or pass --overwrite to write there anyway"),
    ("sweep", ["--widths", "1,2"], f"{JOB_HELD}, and this sweep would mix into it, replacing its config.json"),
], ids=["lr-find", "sweep", "sweep --widths"])
def test_a_pbt_folder_refuses_another_kind_of_command(pbt_folder, tmp_path, capsys, command, extra, message):
    storage, folder = pbt_folder
    before, range_file = snapshot(folder), (folder / "lr_range.json").read_bytes()
    capsys.readouterr()
    code = main([command, str(write_config(tmp_path, storage)), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"pbt: error: {folder} {message}") and err.count("\n") == 1, err
    assert snapshot(folder) == before and (folder / "lr_range.json").read_bytes() == range_file


def test_lr_find_with_overwrite_replaces_only_the_range_test(pbt_folder, tmp_path, capsys):
    _, original = pbt_folder
    storage = tmp_path / "results"
    shutil.copytree(original, storage / "quad")  # a copy: the other tests keep the original
    folder = storage / "quad"
    job, lineage = (folder / "job.json").read_text(), (folder / "lineage.json").read_text()
    config = write_config(tmp_path, storage, lr_range={**QUADRATIC["lr_range"], "max_steps": 40})
    assert main(["lr-find", str(config), "--overwrite"]) == 0
    assert json.loads((folder / "lr_range.json").read_text())["config"]["lr_range"]["max_steps"] == 40  # not the job's 30
    assert (folder / "job.json").read_text() == job and (folder / "lineage.json").read_text() == lineage
    runs = list((folder / "tensorboard" / "lr_range").iterdir())
    assert runs and all(len(list(run.glob("events.out.tfevents.*"))) == 1 for run in runs), "the job's range test runs are replaced"


def test_a_sweep_folder_refuses_a_job_and_a_range_test(ray_session, tmp_path, capsys):
    storage = tmp_path / "results"
    folder = storage / "quad"
    (folder / "sweep").mkdir(parents=True)  # what `pbt sweep` leaves: its config, its arm and its summary
    (folder / "config.json").write_text("{}")
    (folder / "sweep.json").write_text("{}")
    before = snapshot(folder)
    for command, noun, replacing in (("pbt", "run", ", replacing its config.json"), ("lr-find", "range test", "")):
        code = main([command, str(write_config(tmp_path, storage))])
        err = capsys.readouterr().err
        assert code == 2
        assert err == (f"pbt: error: {folder} already holds a sweep (pbt sweep), and this {noun} would mix into it{replacing}; "
                       f"give the {noun} another name (name=...), or pass --overwrite to write there anyway\n")
    assert snapshot(folder) == before


def test_lr_find_again_replaces_its_own_range_test_and_its_tensorboard_runs(tmp_path, capsys):
    storage = tmp_path / "results"
    folder = storage / "quad"
    assert main(["lr-find", str(write_config(tmp_path, storage))]) == 0
    wider = write_config(tmp_path, storage, lr_range={**QUADRATIC["lr_range"], "max_steps": 40, "weight_decays": [0.0, 1e-3]})
    assert main(["lr-find", str(wider)]) == 0
    assert json.loads((folder / "lr_range.json").read_text())["config"]["lr_range"]["max_steps"] == 40
    runs = sorted(run.name for run in (folder / "tensorboard" / "lr_range").iterdir())
    assert runs == ["weight_decay=0", "weight_decay=0.001"]
    assert all(len(list((folder / "tensorboard" / "lr_range" / run).glob("events.out.tfevents.*"))) == 1 for run in runs)


def make_folder(tmp_path: Path, *names: str) -> Storage:
    """An experiment folder holding `names` (a name ending in / is a folder)."""
    storage = Storage(str(tmp_path), "exp")
    for name in names:
        path = storage.local / name.rstrip("/")
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    return storage


RANGE_TEST_FILES = ("lr_range.json", "lr_range.png", "tensorboard/")
JOB_FILES = ("config.json", "job.json", "lr_range.json", "pbt/", "tensorboard/")
SWEEP_FILES = ("config.json", "sweep_w1/", "sweep_w2/", "tensorboard/")


@pytest.mark.parametrize("names, held", [
    ((), []),
    (RANGE_TEST_FILES, [RANGE_TEST]),
    (("config.json", "lr_range.json"), [RANGE_TEST]),  # a job stopped in its range test: nothing to resume
    (JOB_FILES, [JOB]),
    (SWEEP_FILES, [SWEEP]),
    (("sweep.json",), [SWEEP]),
    ((*JOB_FILES, "sweep/"), [JOB, SWEEP]),  # mixed with --overwrite
])
def test_what_a_folder_holds_is_told_by_what_is_at_its_top(tmp_path, names, held):
    assert held_experiments(make_folder(tmp_path, *names)) == held


# (what the folder holds, the kind of experiment written into it, whether it is allowed)
MIXES = [
    (RANGE_TEST_FILES, RANGE_TEST, True),  # `pbt lr-find` again: it replaces its own
    (RANGE_TEST_FILES, JOB, True),  # `pbt run` after `pbt lr-find`: the job's first stage, run again
    (RANGE_TEST_FILES, SWEEP, False),
    (JOB_FILES, RANGE_TEST, False),
    (JOB_FILES, JOB, True),  # the arms decide (check_fresh): `pbt grid` beside `pbt pbt` is one job
    (JOB_FILES, SWEEP, False),
    (SWEEP_FILES, RANGE_TEST, False),
    (SWEEP_FILES, JOB, False),
    (SWEEP_FILES, SWEEP, True),  # the arms decide: `pbt sweep --widths` beside `pbt sweep`
]


@pytest.mark.parametrize("names, kind, allowed", MIXES)
def test_only_the_same_experiment_continues_in_a_folder_unless_overwrite(tmp_path, names, kind, allowed):
    storage = make_folder(tmp_path, *names)
    before = snapshot(storage.local)
    check_unmixed(storage, kind, overwrite=True)
    if allowed:
        check_unmixed(storage, kind, overwrite=False)
    else:
        with pytest.raises(PbtError, match="pass --overwrite to write there anyway"):
            check_unmixed(storage, kind, overwrite=False)
    assert snapshot(storage.local) == before


def test_the_arms_checked_for_freshness_name_their_kind(tmp_path):
    with pytest.raises(PbtError, match="already holds a sweep"):
        check_fresh(make_folder(tmp_path / "a", *SWEEP_FILES), ("grid",), overwrite=False)
    with pytest.raises(PbtError, match="already holds a training job"):
        check_fresh(make_folder(tmp_path / "b", *JOB_FILES), ("sweep_w4",), overwrite=False)
    with pytest.raises(PbtError, match="already holds results of pbt; pass --overwrite"):
        check_fresh(make_folder(tmp_path / "c", *JOB_FILES), ("pbt",), overwrite=False)
    check_fresh(make_folder(tmp_path / "d", *JOB_FILES), ("grid",), overwrite=False)
