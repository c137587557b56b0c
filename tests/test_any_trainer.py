"""Trainers not written by us, through every command: README's example and a stranger's DataLoader trainer.

Neither has a test split; the stranger's has no `steps_per_epoch()`, a short epoch (38 steps),
BatchNorm, NAdam, and returns floats and tensors where pbt's built-ins return detached tensors.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pbt.cli import main
from pbt.config import foreign_trainer_note, load_config
from pbt.errors import PbtError
from pbt.trainer import evaluation

pytestmark = pytest.mark.slow

README = Path(__file__).parents[1] / "README.md"
STRANGER = Path(__file__).parent / "stranger.py"
TINY_POPULATION = {"size": 4, "epochs": 4, "perturbation_interval": 2, "quantile_fraction": 0.25}


def readme_trainer() -> str:
    """The `# my_trainer.py` block of README, exactly as a reader copies it."""
    blocks = re.findall(r"```python\n(# my_trainer\.py\n.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "README holds one `# my_trainer.py` example"
    return blocks[0]


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def write_config(folder: Path, name: str, trainable: str, **sections) -> Path:
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "name": name, "trainable": trainable, "storage_path": str(folder / "results"),
        "lr_range": {"seeds": 1}, "population": TINY_POPULATION, **sections,
    }))
    return config


def readme_walk() -> list[str]:
    """The commands of README's walk from a file of one's own to `pbt run`, exactly as written."""
    blocks = re.findall(r"```bash\n# the walk: .*?\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "README holds one walk"
    return [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]


# What shrinks the walk's `pbt run` to seconds; nothing else is added to README's commands.
TINY_RUN = ["lr_range.seeds=1", "population.size=4", "population.epochs=4", "population.perturbation_interval=2",
            "population.quantile_fraction=0.25"]


def test_readme_walk_from_my_trainer_py_to_pbt_run(ray_session, tmp_path, monkeypatch):
    """README's trainer file and its walk, run as a newcomer runs them from a checkout of pbt."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "own_trainer.yaml").write_text((README.parent / "configs" / "own_trainer.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    out = ""
    for line in readme_walk():
        for command in line.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["mkdir", "-p"]:
                Path(words[2]).mkdir(parents=True, exist_ok=True)
                (Path(words[2]) / "my_trainer.py").write_text(readme_trainer())  # "my_trainer.py (above) is here"
            elif words[0] == "cp":
                shutil.copy(words[1], words[2])
            elif words[0] == "cd":
                monkeypatch.chdir(words[1])
            else:
                assert words[0] == "pbt", line
                code, out = run_cli(*words[1:], *TINY_RUN)
                assert code == 0, out
    assert "Best member:" in out and "Comparison of" in out
    assert "was written for" not in out, "the config made for one's own trainer passes nothing foreign on"
    summary = json.loads((tmp_path / "my_project" / "results" / "my_trainer" / "summary.json").read_text())
    assert set(summary["arms"]) == {"pbt", "grid", "one_cycle"}
    assert summary["arms"]["pbt"]["best_val_acc"] > 0.2


def test_a_built_ins_trainer_section_going_to_another_trainer_is_said_in_one_line(tmp_path):
    config = README.parent / "configs" / "mnist1d.yaml"
    overrides = ["trainable=my_trainer.py:MyTrainer", "trainer.batch_size=64"]
    note = foreign_trainer_note(config, overrides, load_config(config, overrides))
    assert note.startswith(f"the trainer: section of {str(config)!r} was written for 'mnist1d' and goes to ")
    assert "(nesterov, optimizer, val_fraction, width)" in note, "batch_size was set on the command line"
    assert "\n" not in note
    own = README.parent / "configs" / "own_trainer.yaml"
    assert foreign_trainer_note(own, overrides, load_config(own, overrides)) is None, "its trainer: section is empty"
    assert foreign_trainer_note(config, ["trainable=mnist1d"], load_config(config, ["trainable=mnist1d"])) is None


@pytest.fixture(scope="module")
def stranger_run(ray_session, tmp_path_factory):
    """`pbt run` on the stranger's trainer, once for every test below."""
    root = tmp_path_factory.mktemp("stranger")
    config = write_config(root, "stranger", f"{STRANGER}:StrangerTrainer")
    code, out = run_cli("run", str(config))
    return code, out, root / "results" / "stranger"


def test_a_dataloader_trainer_without_test_split_runs_every_arm(stranger_run):
    code, out, folder = stranger_run
    assert code == 0, out
    # The epoch (38 batches, counted by len() of the DataLoader) is too short for a sweep: extended.
    assert "Sweep                 2.6 epochs (100 steps of 38 an epoch)" in out
    assert re.search(r"Best member: \d   validation accuracy 0\.\d{4}\n", out), "no test accuracy to print"
    assert re.search(r"Best grid point: .*validation accuracy 0\.\d{4}\n", out)
    assert re.search(r"One-cycle run: validation accuracy 0\.\d{4}\n", out)
    table = out[out.index("arm          runs"):]
    for row in ("PBT ", "grid search ", "one-cycle "):
        line = next(line for line in table.splitlines() if line.startswith(row))
        assert line.split()[-6] == "-", line  # the test column
    summary = json.loads((folder / "summary.json").read_text())
    for arm in summary["arms"].values():
        assert "test_acc" not in arm["chosen"]
        assert all("test_acc" not in point for point in arm["curve"])
        assert arm["best_val_acc"] > 0.8  # the data are linearly separable into 3 classes
    lineage = json.loads((folder / "lineage.json").read_text())
    assert len(lineage["best"]["schedule"]) == TINY_POPULATION["epochs"]


def test_tensorboard_leaves_out_the_test_accuracy_it_never_got(stranger_run):
    _, _, folder = stranger_run
    compare = EventAccumulator(str(folder / "tensorboard" / "compare" / "pbt"))
    compare.Reload()
    scalars = set(compare.Tags()["scalars"])
    assert "vs_epochs_trained/best_val_acc" in scalars
    assert not any("test_acc" in tag for tag in scalars)
    member = EventAccumulator(str(folder / "tensorboard" / "pbt" / "member_00"))
    member.Reload()
    scalars = set(member.Tags()["scalars"])
    assert {"member/val_acc", "final/val_acc", "final/best_val_acc"} <= scalars
    assert not any("test_acc" in tag for tag in scalars)


def test_replay_and_compare_work_without_a_test_split(stranger_run):
    _, _, folder = stranger_run
    code, out = run_cli("replay", str(folder))
    assert code == 0, out
    lines = out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.split() == ["val", "acc"])):][:4]
    assert [line.split()[0] for line in table[1:]] == ["PBT", "replay", "diff"], table  # no test column
    assert all(len(line.split()) == 2 for line in table[1:]), table
    assert len(json.loads((folder / "replay.json").read_text())["epochs"]) == TINY_POPULATION["epochs"]
    code, out = run_cli("compare", str(folder))
    assert code == 0 and "Comparison of" in out


def test_a_generator_epoch_is_counted_by_one_pass(ray_session, tmp_path):
    config = write_config(tmp_path, "generator", f"{STRANGER}:GeneratorStrangerTrainer")
    code, out = run_cli("lr-find", str(config), "lr_range.min_steps=200")
    assert code == 0, out
    assert "5.3 epochs (200 steps of 38 an epoch)" in out
    saved = json.loads((tmp_path / "results" / "generator" / "lr_range.json").read_text())
    assert saved["ranges"][0]["epoch_steps"] == 38 and saved["ranges"][0]["planned_steps"] == 200


def test_a_trainer_with_its_own_optimizer_sweeps_it_as_own(stranger_run):
    _, _, folder = stranger_run
    config = folder.parent.parent / "stranger.yaml"
    # A folder of its own: a sweep into the run's folder is refused (it would mix with the run's results).
    sweep = ["name=stranger_sweep", "sweep.rates=3", "sweep.max_epochs=2", "sweep.lr_min=1e-3", "sweep.lr_max=0.1"]
    code, out = run_cli("sweep", str(config), *sweep)
    assert code == 2  # it builds NAdam whatever trainer.optimizer says: sweeping "sgd" would be a lie
    code, out = run_cli("sweep", str(config), "--optimizers", "own", *sweep)
    assert code == 0, out
    runs = json.loads((folder.parent / "stranger_sweep" / "sweep.json").read_text())["widths"][0]["optimizers"]["own"]["runs"]
    assert len(runs) == 3 and {run["status"] for run in runs} <= {"reached", "not reached", "diverged"}


class _NoValidation:
    def evaluate(self):
        return {"loss": 0.3, "acc": 0.9}


def test_an_evaluate_without_val_acc_is_named():
    with pytest.raises(PbtError, match=r"_NoValidation.evaluate\(\) returned \['acc', 'loss'\], without val_loss and val_acc"):
        evaluation(_NoValidation())
