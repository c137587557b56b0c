"""Every way a user can get it wrong: one line naming what is wrong, exit code 2, nothing written.

Each case runs the real command in-process (`pbt.cli.main`) against a config whose storage path
is a fresh folder, and checks the exact message fragment, the exit code, that no traceback was
printed and that no experiment folder was created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pbt.cli import main

GOOD = {"name": "bad", "trainer": {"num_samples": 1000}, "population": {"size": 4, "epochs": 4, "perturbation_interval": 2}}

# (id, command, config changes or raw YAML text, extra arguments, expected message fragment)
CASES = [
    ("unknown top-level key", "pbt", {"populaton": {}}, [], "populaton: unknown key; did you mean 'population'?"),
    ("misspelt nested key", "pbt", {}, ["population.siz=8"], "population.siz: unknown key; did you mean 'size'?"),
    ("misspelt trainer key", "run", {}, ["trainer.optimzer=adam"], "trainer.optimzer: unknown key; did you mean 'optimizer'?"),
    ("override after an option", "pbt", {}, ["--overwrite", "population.size=1"], "population.size: Input should be greater than or equal to 2"),
    ("wrong type", "pbt", {}, ["population.size=many"], "population.size: Input should be a valid integer"),
    ("population under 2", "pbt", {}, ["population.size=1"], "population.size: Input should be greater than or equal to 2, but got 1"),
    ("quantile zero", "pbt", {}, ["population.quantile_fraction=0"], "population.quantile_fraction: Input should be greater than 0"),
    ("quantile above a half", "pbt", {}, ["population.quantile_fraction=0.6"], "quantile_fraction: Input should be less than or equal to 0.5, but got 0.6"),
    ("interval longer than the run", "run", {}, ["population.perturbation_interval=9"], "perturbation_interval must not exceed population.epochs, but got perturbation_interval=9 and epochs=4"),
    ("lr low above high", "pbt", {"search": {"lr": {"low": 0.1, "high": 0.01}}}, [], "search.lr: low must not exceed high, but got low=0.1 and high=0.01"),
    ("lr zero", "grid", {"search": {"lr": {"low": 0.0, "high": 0.01}}}, [], "search.lr: learning rates must be positive, but got low=0.0"),
    ("lr negative", "pbt", {"search": {"lr": {"low": -0.1, "high": 0.01}}}, [], "search.lr.low: Input should be greater than or equal to 0, but got -0.1"),
    ("range test lr_min zero", "lr-find", {}, ["lr_range.lr_min=0"], "lr_range.lr_min: Input should be greater than 0, but got 0"),
    ("range test bounds reversed", "lr-find", {}, ["lr_range.lr_min=1", "lr_range.lr_max=0.1"], "lr_min must be below lr_max, but got lr_min=1.0 and lr_max=0.1"),
    ("negative weight decay in the test", "lr-find", {}, ["lr_range.weight_decays=[0.0, -1.0e-4]"], "weight decays must be >= 0"),
    ("momentum at 1", "pbt", {"search": {"momentum": {"low": 0.9, "high": 1.0}}}, [], "search.momentum: momentum must stay below 1, but got high=1.0"),
    ("weight decay range from zero", "pbt", {"search": {"weight_decay": {"low": 0.0, "high": 1e-3}}}, [], "the weight decay range is log-scaled, so low must be > 0"),
    ("grid lr not positive", "grid", {"grid": {"lr": [0.1, -1.0]}}, [], "grid.lr: learning rates must be positive, but got [0.1, -1.0]"),
    ("grid momentum above 1", "grid", {"grid": {"momentum": [1.5]}}, [], "grid.momentum: momentum values must be in [0, 1), but got [1.5]"),
    ("one-cycle momenta reversed", "run", {"one_cycle": {"base_momentum": 0.99}}, [], "base_momentum must not exceed max_momentum"),
    ("target accuracy above 1", "run", {}, ["compare.target_val_acc=1.5"], "compare.target_val_acc: Input should be less than or equal to 1"),
    ("no CPU", "pbt", {}, ["resources.cpu=0"], "resources.cpu: Input should be greater than 0, but got 0"),
    ("more GPUs than the machine has", "pbt", {}, ["resources.gpu=64"], "resources.gpu=64: each member asks for 64 GPUs on one machine, but this machine has"),
    ("more CPUs than the machine has", "run", {}, ["resources.cpu=64"], "resources.cpu=64: each member asks for 64 CPUs on one machine, but this machine has"),
    ("unknown optimizer", "lr-find", {}, ["trainer.optimizer=lbfgs"], "trainer.optimizer: Input should be 'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad' or 'adadelta'"),
    ("bad experiment name", "pbt", {}, ["name=a/b"], "name: String should match pattern"),
    ("CIFAR-10 files missing offline", "run", {"trainable": "cifar10", "trainer": {"data_dir": "/nonexistent/pbt-data"}}, [],
     "trainer.data_dir: '/nonexistent/pbt-data/cifar-10-batches-py' holds no CIFAR-10 files (expected data_batch_1, "),
    ("MNIST files missing offline", "lr-find", {"trainable": "mnist", "trainer": {"data_dir": "/nonexistent/pbt-data"}}, [],
     "on a machine with internet run: pbt lr-find configs/mnist.yaml trainer.download=true trainer.data_dir=/nonexistent/pbt-data"),
    ("trainer file missing", "pbt", {"trainable": "no_such_file.py:Model"}, [], "no_such_file.py' does not exist"),
    ("trainer module missing", "pbt", {"trainable": "no_such_package.models:Model"}, [], "trainable: no module named 'no_such_package.models'"),
    ("unknown trainer name", "pbt", {"trainable": "resnet9000"}, [], "trainable: unknown trainer 'resnet9000'; use a registered name (cifar10, fashion_mnist, mnist, mnist1d)"),
    ("trainer lacks methods", "pbt", {"trainable": "INCOMPLETE"}, [], "lacks the Trainer methods train_step, evaluate"),
    ("trainer class missing in file", "pbt", {"trainable": "INCOMPLETE_OTHER"}, [], "has no class 'Nope'"),
    ("config file missing", "pbt", "MISSING", [], "does not exist"),
    ("broken YAML", "pbt", "name: [unclosed\n", [], "is not valid YAML at line"),
    ("YAML that is not a mapping", "pbt", "- a\n- b\n", [], "must hold a mapping of keys, but holds a list"),
    ("override without a value", "pbt", {}, ["population.size"], "override must look like key.subkey=value, but got 'population.size'"),
    ("override into a value", "pbt", {}, ["name.first=x"], "override 'name.first=x': name is a value, not a section"),
    ("storage path not writable", "run", {"storage_path": "/proc/pbt-results"}, [], "storage_path: cannot write to '/proc'"),
    ("storage path is a file", "pbt", {"storage_path": "A_FILE"}, [], "is a file, not a folder"),
    ("storage URI of unknown scheme", "run", {"storage_path": "s4://bucket/results"}, [], "storage_path: pyarrow cannot open 's4://bucket/results' (Unrecognized filesystem type"),
    ("storage URI not writable", "pbt", {"storage_path": "file:///proc/pbt-results"}, [], "storage_path: cannot write to 'file:///proc/pbt-results/"),
    ("cluster unreachable", "pbt", {}, ["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at '127.0.0.1:1'"),
    ("Ray Client address", "run", {}, ["--address", "ray://head:10001"], "is a Ray Client address, which Ray Tune does not support well"),
    ("malformed address", "grid", {}, ["--address", "head-node"], "address must look like HOST:PORT"),
    # 64 packs of 2: more than any machine this runs on has CPUs, so PBT's packs could never all run.
    ("more packs than slots", "pbt", {"population": {"size": 128, "pack": 2, "epochs": 4}}, [],
     "PBT across packs needs every pack running together"),
]


@pytest.mark.parametrize("command, config, extra, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_clear_line_and_nothing_is_written(tmp_path, capsys, command, config, extra, fragment):
    storage = tmp_path / "results"
    path = _write_config(tmp_path, config, storage)
    code = main([command, str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert err.startswith("pbt: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not storage.exists() and not (Path("/proc") / "pbt-results").exists()


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("command", ["replay", "compare"])
def test_a_folder_that_holds_no_experiment_is_refused(tmp_path, capsys, command):
    code = main([command, str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and ("give a folder written by `pbt" in err) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _write_config(tmp_path: Path, config, storage: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    if config == "MISSING":
        return tmp_path / "nowhere.yaml"
    if isinstance(config, str):
        path.write_text(config)
        return path
    merged = {**GOOD, "storage_path": str(storage), **config}
    if merged["storage_path"] == "A_FILE":
        (tmp_path / "a_file").write_text("")
        merged["storage_path"] = str(tmp_path / "a_file")
    if merged.get("trainable", "").startswith("INCOMPLETE"):
        module = tmp_path / "incomplete.py"
        module.write_text("class Model:\n    def batches(self):\n        return []\n")
        merged["trainable"] = f"{module}:{'Model' if merged['trainable'] == 'INCOMPLETE' else 'Nope'}"
    path.write_text(yaml.safe_dump(merged))
    return path


class Payload:
    """What a foreign pickle could carry: code that runs when it is unpickled (here: it touches a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


FOLDER_CASES = [
    ("no job record", "resume", "no_job", "job.json' does not exist; give a folder written by `pbt run`"),
    ("config.json is not JSON", "resume", "config_garbage", "config.json' is damaged, it is not JSON"),
    ("config.json of something else", "resume", "config_foreign", "is not a pbt experiment config: foo: unknown key"),
    ("checkpoint with pickled code", "resume", "checkpoint_code", "is damaged or not a pbt checkpoint, so it was not loaded"),
    ("truncated checkpoint", "resume", "checkpoint_truncated", "is damaged or not a pbt checkpoint, so it was not loaded"),
    ("checkpoint of something else", "resume", "checkpoint_foreign", "is not a pbt member checkpoint"),
    ("lineage.json is not JSON", "replay", "lineage_garbage", "lineage.json' is damaged, it is not JSON"),
]


@pytest.mark.parametrize("command, damage, fragment", [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES])
def test_a_damaged_or_foreign_experiment_folder_is_refused_without_running_its_code(tmp_path, capsys, command, damage, fragment):
    import torch

    from pbt.config import validate_config
    from pbt.search.space import Bound, SearchSpace

    folder = tmp_path / "results" / "bad"
    checkpoint = folder / "pbt" / "PBTMember_00000" / "checkpoint_000004"
    checkpoint.mkdir(parents=True)
    (folder / "config.json").write_text(validate_config({**GOOD, "storage_path": str(tmp_path / "results")}).model_dump_json())
    space = SearchSpace(Bound(0.01, 0.1, True), Bound(0.85, 0.95, False, True), Bound(1e-5, 1e-3, True))
    (folder / "job.json").write_text(json.dumps({"arms": ["pbt"], "space": space.to_dict()}))
    (folder / "lineage.json").write_text(json.dumps({"best": {"schedule": []}}))
    torch.save({"trainer": {}, "history": [], "diverged": False}, checkpoint / "member.pt")
    marker = tmp_path / "code-ran"
    damages = {
        "no_job": lambda: (folder / "job.json").unlink(),
        "config_garbage": lambda: (folder / "config.json").write_text("{not json"),
        "config_foreign": lambda: (folder / "config.json").write_text('{"foo": 1}'),
        "checkpoint_code": lambda: torch.save({"trainer": Payload(marker), "history": [], "diverged": False},
                                              checkpoint / "member.pt"),
        "checkpoint_truncated": lambda: (checkpoint / "member.pt").write_bytes((checkpoint / "member.pt").read_bytes()[:100]),
        "checkpoint_foreign": lambda: torch.save({"weights": torch.zeros(3)}, checkpoint / "member.pt"),
        "lineage_garbage": lambda: (folder / "lineage.json").write_text("]"),
    }
    damages[damage]()
    before = sorted(p for p in tmp_path.rglob("*"))
    code = main([command, str(folder)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert err.startswith("pbt: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists(), "no pickled code ran"
    assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing was written"


def test_a_node_local_storage_path_is_refused_on_a_cluster_of_several_machines(tmp_path):
    from pbt.config import validate_config
    from pbt.errors import PbtError
    from pbt.storage.checks import check_cluster_storage, file_system_type

    config = validate_config({"storage_path": str(tmp_path)})
    local = "/dev/sda1 / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n"
    shared = local + f"nfs-server:/export {tmp_path} nfs4 rw 0 0\n"
    assert file_system_type(tmp_path / "results", shared) == "nfs4"
    assert file_system_type(Path(str(tmp_path) + "x"), shared) == "ext4"
    check_cluster_storage(config.storage, hosts=3, mounts=shared)  # shared: fine
    check_cluster_storage(config.storage, hosts=1, mounts=local)  # one machine: any folder is fine
    with pytest.raises(PbtError, match=r"node-local file system \(ext4\), but the cluster spans 3 machines"):
        check_cluster_storage(config.storage, hosts=3, mounts=local)
