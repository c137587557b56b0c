"""A stranger's trainer, first try (issue 28, parts 2 and 3).

`my_mlp.py` is a 2-layer MLP fed by a `DataLoader`; beside it, trainers that import it the way a
script imports its neighbour (`from my_mlp import MLPTrainer`) and break the contract: an
`evaluate()` that returns `{'loss', 'accuracy'}`, an `__init__` that raises, a first loss that is
NaN. Each is one line on stderr, exit code 2 and no experiment folder, found in the driver
before Ray starts. `trainable=my_mlp:MLPTrainer` imports from the current directory, in the
driver and in Ray's workers (which were started before the test changed directory).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from vision_files import write_cifar10, write_mnist

from pbt.cli import main
from pbt.config import validate_config
from pbt.contract import check_contract
from pbt.errors import PbtError

CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist1d.yaml")

MY_MLP = '''\
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pbt import Trainer


class MLPTrainer(Trainer):
    def __init__(self, config, device):
        super().__init__(config, device)
        data = torch.Generator().manual_seed(0)
        x = torch.randn(1500, 10, generator=data)
        x, y = self.prepare(x), (x @ torch.randn(10, 3, generator=data)).argmax(1)
        self.loader = DataLoader(TensorDataset(x[:1000], y[:1000]), batch_size=config.get("batch_size", 32), shuffle=True)
        self.val = x[1000:1250].to(device), y[1000:1250].to(device)
        self.test = x[1250:].to(device), y[1250:].to(device)
        self.model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def prepare(self, x):
        return x

    def batches(self):
        return self.loader

    def train_step(self, batch):
        x, y = (t.to(self.device) for t in batch)
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def scores(self, x, y):
        logits = self.model(x)
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()

    def evaluate(self):
        val_loss, val_acc = self.scores(*self.val)
        return {"val_loss": val_loss, "val_acc": val_acc, "test_acc": self.scores(*self.test)[1]}
'''

BAD_EVAL = '''\
from my_mlp import MLPTrainer


class BadEval(MLPTrainer):
    def evaluate(self):
        loss, accuracy = self.scores(*self.val)
        return {"loss": loss, "accuracy": accuracy}
'''

BAD_INIT = '''\
import torch

from my_mlp import MLPTrainer


class BadInit(MLPTrainer):
    def __init__(self, config, device):
        super().__init__(config, device)
        self.model.load_state_dict(torch.load("pretrained.pt", weights_only=True))
'''

NAN_LOSS = '''\
import torch

from my_mlp import MLPTrainer


class NaNLoss(MLPTrainer):
    def prepare(self, x):
        x[:, 3] = 1.0  # a constant feature: its std is 0
        return (x - x.mean(0)) / x.std(0)
'''

SUB = '''\
from my_mlp import MLPTrainer


class SubTrainer(MLPTrainer):
    pass
'''

FILES = {"my_mlp.py": MY_MLP, "bad_eval.py": BAD_EVAL, "bad_init.py": BAD_INIT, "nan_loss.py": NAN_LOSS, "sub.py": SUB}
TINY = ["population.size=4", "population.epochs=8"]


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """The stranger's folder; sys.path and the `my_mlp` import put back afterwards, so that no
    test finds the module through an earlier one's folder."""
    where = tmp_path / "stranger"
    where.mkdir()
    for name, text in FILES.items():
        (where / name).write_text(text)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_mlp", raising=False)
    yield where
    sys.modules.pop("my_mlp", None)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def refused(folder: Path, trainable: str, command: str = "run") -> str:
    """The one line `pbt COMMAND configs/mnist1d.yaml trainable=...` prints; asserts exit 2 and nothing written."""
    results = folder.parent / "results"
    code, out, err = run(command, CONFIG, f"trainable={trainable}", f"storage_path={results}", *TINY)
    assert code == 2, out + err
    assert err.startswith("pbt: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not results.exists(), "nothing written"
    return err.removeprefix("pbt: error: ").rstrip("\n")


def test_an_evaluate_without_val_loss_and_val_acc_is_one_line_before_anything_starts(folder):
    spec = f"{folder / 'bad_eval.py'}:BadEval"
    assert refused(folder, spec) == (
        f"trainable: '{spec}' evaluate() at {folder / 'bad_eval.py'}:5 returned ['accuracy', 'loss'], "
        "without val_loss and val_acc: it must return at least val_loss and val_acc (and test_acc if there is a test split)"
    )


def test_an_init_that_raises_is_named_with_the_users_line(folder):
    spec = f"{folder / 'bad_init.py'}:BadInit"
    assert refused(folder, spec, "pbt") == (
        f"trainable: '{spec}' __init__ raised FileNotFoundError: [Errno 2] No such file or directory: "
        f"'pretrained.pt' at {folder / 'bad_init.py'}:9"
    )


def test_a_first_loss_that_is_nan_is_one_line(folder):
    spec = f"{folder / 'nan_loss.py'}:NaNLoss"
    assert refused(folder, spec, "lr-find") == (
        f"trainable: '{spec}' train_step() at {folder / 'my_mlp.py'}:26 returned a loss of nan on the first batch, "
        "before any update could make it diverge: look for a NaN or inf in the data, the model or the loss"
    )


def test_a_relative_file_trainer_is_named_as_given(folder, monkeypatch):
    monkeypatch.chdir(folder)
    assert refused(folder, "bad_eval.py:BadEval").startswith(
        "trainable: 'bad_eval.py:BadEval' evaluate() at bad_eval.py:5 returned ['accuracy', 'loss'], without val_loss and val_acc"
    )


def test_a_module_not_in_the_current_directory_says_where_it_looked(folder):
    line = refused(folder, "my_mlp:MLPTrainer")
    assert line == (
        f"trainable: no module named 'my_mlp' (from 'my_mlp:MLPTrainer'), neither in the current directory "
        f"({Path.cwd()}) nor among the installed packages; run pbt from the folder that holds my_mlp.py, "
        "or name the file: path/to/my_mlp.py:MLPTrainer"
    )


def test_an_import_that_fails_inside_the_trainers_file_is_one_line(folder):
    (folder / "broken.py").write_text("import numpy\nimport no_such_helper\n")
    line = refused(folder, f"{folder / 'broken.py'}:Broken")
    assert line == (
        f"trainable: importing {folder / 'broken.py'} raised ModuleNotFoundError: No module named 'no_such_helper' "
        f"at {folder / 'broken.py'}:2"
    )


BUILT_IN = {
    "mnist1d": {"num_samples": 1000, "width": 0.5, "batch_size": 16},
    "cifar10": {"val_size": 20, "width": 0.25, "batch_size": 16},
    "mnist": {"val_size": 32, "batch_size": 16},
    "fashion_mnist": {"val_size": 32, "batch_size": 16},
}
TEST_TRAINERS = ["synthetic.py:QuadraticTrainer", "synthetic.py:AdagradQuadraticTrainer", "synthetic.py:PlateauTrainer",
                 "stranger.py:StrangerTrainer", "stranger.py:GeneratorStrangerTrainer"]


@pytest.mark.parametrize("trainable", [*BUILT_IN, *TEST_TRAINERS])
def test_the_builtin_and_test_trainers_pass_the_check(trainable, tmp_path):
    if trainable in BUILT_IN:
        trainer = BUILT_IN[trainable]
        if trainable == "cifar10":
            write_cifar10(tmp_path)
        elif trainable != "mnist1d":
            write_mnist(tmp_path, folder="MNIST" if trainable == "mnist" else "FashionMNIST")
        trainer = trainer if trainable == "mnist1d" else {**trainer, "data_dir": str(tmp_path)}
        config = {"trainable": trainable, "trainer": trainer}
    else:
        config = {"trainable": str(Path(__file__).parent / trainable)}
    check_contract(validate_config(config))


def test_the_check_leaves_the_drivers_random_state_alone(folder):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    check_contract(validate_config({"trainable": f"{folder / 'sub.py'}:SubTrainer"}))
    assert torch.equal(torch.rand(3), expected)


def test_a_state_that_torch_load_refuses_is_named(folder):
    (folder / "odd_state.py").write_text(
        "from my_mlp import MLPTrainer\n\n\nclass Odd:\n    pass\n\n\n"
        "class OddState(MLPTrainer):\n    def state_dict(self):\n        return {**super().state_dict(), 'odd': Odd()}\n"
    )
    with pytest.raises(PbtError, match=r"state_dict\(\) at .*odd_state.py:9 returned what torch.load\(weights_only=True\) refuses"):
        check_contract(validate_config({"trainable": f"{folder / 'odd_state.py'}:OddState"}))


def test_python_path_is_pinned_where_pbt_was_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_config({"trainable": "my_mlp:MLPTrainer"}).python_path == [str(tmp_path)]
    assert validate_config({"trainable": "my_mlp:MLPTrainer", "python_path": ["src"]}).python_path == [
        str(tmp_path / "src"), str(tmp_path)]
    assert validate_config({"trainable": "my_mlp.py:MLPTrainer"}).python_path == [], "a file brings its own folder"
    assert validate_config({"trainable": "mnist1d"}).python_path == []


@pytest.mark.slow
def test_a_module_in_the_current_directory_reaches_rays_workers(ray_session, folder, monkeypatch):
    monkeypatch.chdir(folder)  # Ray's workers started in another directory, before this
    # Two weight decays: the range test runs as two Ray tasks, each importing my_mlp in a worker.
    code, out, err = run("lr-find", CONFIG, "trainable=my_mlp:MLPTrainer", "storage_path=results", "name=mlp",
                         "lr_range.seeds=1", "lr_range.weight_decays=[0.0, 1.0e-4]", *TINY)
    assert code == 0, out + err
    saved = json.loads((folder / "results" / "mlp" / "lr_range.json").read_text())
    assert [r["weight_decay"] for r in saved["ranges"]] == [0.0, 1e-4] and not saved.get("failures"), saved
    assert saved["config"]["python_path"] == [str(folder)], "the folder the workers were given"


@pytest.mark.slow
def test_a_population_of_a_file_trainer_that_imports_its_neighbour(ray_session, folder, tmp_path):
    # Run from elsewhere: sub.py's own folder is what makes `from my_mlp import MLPTrainer` work,
    # in the driver and in every member's actor.
    results = tmp_path / "results"
    code, out, err = run("pbt", CONFIG, f"trainable={folder / 'sub.py'}:SubTrainer", f"storage_path={results}",
                         "name=sub", "population.size=2", "population.epochs=2", "population.perturbation_interval=1",
                         "search.lr.low=0.01", "search.lr.high=0.1")
    assert code == 0, out + err
    assert "Best member:" in out and "0 member(s) failed" not in out and "failed" not in out, out
    reports = (results / "sub" / "pbt" / "reports.jsonl").read_text().splitlines()
    assert len(reports) == 4 and all(json.loads(line)["val_acc"] > 0 for line in reports)
