"""Config loading, overrides, and the one-line error (exit code 2) for every bad config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pbt.cli import main
from pbt.config import apply_override, load_config
from pbt.errors import PbtError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_loads_with_overrides():
    config = load_config(REPO / "configs" / "mnist1d.yaml", ["trainer.optimizer=adam", "lr_range.lr_min=1e-5"])
    assert config.trainable == "mnist1d"
    assert config.trainer["optimizer"] == "adam"
    assert config.lr_range.lr_min == 1e-5  # "1e-5" is a string to YAML 1.1; a number to us


def test_override_creates_nested_sections_and_parses_yaml_values():
    raw: dict = {}
    apply_override(raw, "lr_range.weight_decays=[0.0, 1e-4]")
    apply_override(raw, "trainer.nesterov=true")
    assert raw == {"lr_range": {"weight_decays": [0.0, "1e-4"]}, "trainer": {"nesterov": True}}


def test_relative_trainer_file_is_pinned_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("trainable: my/trainer.py:Mine\n")
    assert load_config(path).trainable == f"{tmp_path / 'my' / 'trainer.py'}:Mine"


BAD_CONFIGS = [
    # (YAML text, overrides, fragment of the one-line message)
    ("lr_rnage: {}\n", [], "lr_rnage: unknown key; did you mean 'lr_range'?"),
    ("lr_range: {lr_mni: 1.0e-5}\n", [], "lr_range.lr_mni: unknown key; did you mean 'lr_min'?"),
    ("lr_range: {lr_min: 0}\n", [], "lr_range.lr_min: Input should be greater than 0, but got 0"),
    ("lr_range: {lr_min: -1.0e-3}\n", [], "lr_range.lr_min: Input should be greater than 0, but got -0.001"),
    ("lr_range: {lr_min: 1, lr_max: 0.1}\n", [], "lr_min must be below lr_max, but got lr_min=1.0 and lr_max=0.1"),
    ("lr_range: {lr_min: fast}\n", [], "lr_range.lr_min: Input should be a valid number"),
    ("lr_range: {seeds: 0}\n", [], "lr_range.seeds: Input should be greater than or equal to 1, but got 0"),
    ("lr_range: {momentum: 1.5}\n", [], "lr_range.momentum: Input should be less than 1, but got 1.5"),
    ("lr_range: {weight_decays: [-1.0e-4]}\n", [], "weight decays must be >= 0, but got [-0.0001]"),
    ("lr_range: {weight_decays: []}\n", [], "lr_range.weight_decays: List should have at least 1 item"),
    ("resources: {cpu: 0}\n", [], "resources.cpu: Input should be greater than 0, but got 0"),
    ("name: 'a b'\n", [], "name: String should match pattern"),
    ("trainer: {optimizer: lbfgs}\n", [], "trainer.optimizer: Input should be 'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad' or 'adadelta', but got 'lbfgs'"),
    ("trainer: {batch_sise: 8}\n", [], "trainer.batch_sise: unknown key; did you mean 'batch_size'?"),
    ("trainer: {batch_size: 0}\n", [], "trainer.batch_size: Input should be greater than or equal to 1, but got 0"),
    ("trainable: nosuchtrainer\n", [], "trainable: unknown trainer 'nosuchtrainer'"),
    ("trainable: nosuchpkg.mod:Cls\n", [], "trainable: no module named 'nosuchpkg.mod'"),
    ("trainable: missing/file.py:Cls\n", [], "does not exist"),
    ("trainable: pbt.config:NoSuchClass\n", [], "trainable: 'pbt.config' has no class 'NoSuchClass'"),
    ("trainable: pbt.config:ExperimentConfig\n", [], "lacks the Trainer methods"),
    ("- just\n- a list\n", [], "must hold a mapping of keys, but holds a list"),
    ("lr_range: {lr_min: [1\n", [], "is not valid YAML at line"),
    ("{}\n", ["lr_range"], "override must look like key.subkey=value, but got 'lr_range'"),
    ("{}\n", ["seed=7", "seed.x=1"], "seed is a value, not a section"),
    ("{}\n", ["lr_range.seeds=three"], "lr_range.seeds: Input should be a valid integer"),
]


@pytest.mark.parametrize("text, overrides, fragment", BAD_CONFIGS, ids=[b[2][:40] for b in BAD_CONFIGS])
def test_bad_config_gives_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, text, overrides, fragment):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["lr-find", str(path), *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists(), "nothing may be written for a bad config"


def test_missing_config_file(tmp_path, capsys):
    assert main(["lr-find", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_config_raises_pbt_error_with_dotted_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr_range": {"smooth_window": 0}}))
    with pytest.raises(PbtError, match=r"^lr_range\.smooth_window: .*but got 0$"):
        load_config(path)
