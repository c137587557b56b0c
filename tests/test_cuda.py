"""pbt on a CUDA GPU: the vision built-ins, packs (eager and captured), checkpoints, memory, resources,
`pbt lr-find`, `pbt run` through Ray, and Ctrl-C with `pbt resume`.

Every test here is marked `cuda` and skipped where `torch.cuda.is_available()` is False;
`pytest -m cuda` runs them on a machine with a GPU (`scripts/gpu_check.sh` does, with the GPU
benchmarks). Data are small random images in the real file formats (tests/vision_files.py).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from ray import tune
from vision_files import write_cifar10, write_mnist

from pbt.cli import main
from pbt.cluster.resources import check_resources, local_machine
from pbt.config import Resources, validate_config
from pbt.engines.actor.trainable import PBTMember
from pbt.engines.common import load_member_state, load_pack_state
from pbt.engines.packed.capture import WARMUP_STEPS
from pbt.engines.packed.model import PackedTrainer, member_of
from pbt.engines.packed.trainable import PackTrial
from pbt.errors import PbtError
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer
from pbt.reporting.progress import gpu_memory_line

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
HYPERPARAMS = [
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    {"lr": 0.02, "momentum": 0.0, "weight_decay": 0.0},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3},
]
MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def write_images(folder: Path, dataset: str) -> None:
    """200 training images (40 held out for validation) and 40 test images, in the data set's format."""
    if dataset == "cifar10":
        write_cifar10(folder, per_batch=40, test=40)
    else:
        write_mnist(folder, train=200, test=40, folder=MNIST_FOLDERS[dataset])


def vision_config(folder: Path, dataset: str = "cifar10", **trainer):
    """A small member of a vision built-in: batches of 16, 10 steps an epoch, ResNet-20 at a quarter width."""
    write_images(folder, dataset)
    narrow = {"width": 0.25} if dataset == "cifar10" else {}
    return validate_config({"trainable": dataset, "trainer": {"data_dir": str(folder), "val_size": 40, "batch_size": 16,
                                                              **narrow, **trainer}})


def batches(pack: PackedTrainer, count: int) -> list[torch.Tensor]:
    """`count` steps' (K, batch) indices, epoch after epoch, drawn once so two packs can share them."""
    def forever():
        while True:
            yield from pack.batch_indices()
    return [indices.clone() for indices in itertools.islice(forever(), count)]


def assert_same_members(pack: PackedTrainer, other: PackedTrainer, **tolerance) -> None:
    for member in range(pack.size):
        mine, theirs = pack.member_state(member), other.member_state(member)
        for name, tensor in mine["model"].items():
            assert tensor.device.type == "cuda", name
            torch.testing.assert_close(tensor, theirs["model"][name], msg=f"member {member}: {name}", **tolerance)
        torch.testing.assert_close(mine["optimizer"]["state"], theirs["optimizer"]["state"], **tolerance)


def cuda_member(monkeypatch, cls: type[tune.Trainable], experiment, config: dict) -> tune.Trainable:
    """A trainable built in this process as Ray would build it on a GPU worker (`ray.get_gpu_ids()`
    is empty in the driver, so its device is pinned to CUDA here)."""
    monkeypatch.setattr(f"{cls.__module__}.pick_device", lambda want_gpu: CUDA)
    return tune.with_parameters(cls, experiment=experiment)(config=config)


def member_config(member: int = 0, **values) -> dict:
    return {"member": member, **HYPERPARAMS[0], **values}


# -- the vision built-ins --------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["bf16-channels_last", "float32"])
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_each_vision_builtin_trains_on_cuda(tmp_path, dataset, fast):
    trainer = build_trainer(vision_config(tmp_path, dataset, autocast=fast, channels_last=fast), device=CUDA)
    assert trainer.x_train.is_cuda and trainer.x_train.dtype == torch.uint8, "the images live on the GPU as uint8"
    convolutions = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) == fast for m in convolutions)
    dtypes = set()
    hook = convolutions[-1].register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    set_hyperparams(trainer.optimizer, lr=0.05, momentum=0.9)
    epochs = [trainer.train_epoch() for _ in range(2)]
    hook.remove()
    assert dtypes == {torch.bfloat16 if fast else torch.float32}
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) and 0 <= e["train_acc"] <= 1 for e in epochs)
    assert all(not torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before)), "every weight trained"
    metrics = trainer.evaluate()
    assert set(metrics) == {"val_loss", "val_acc", "test_acc"} and 0 <= metrics["val_acc"] <= 1


# -- packs ----------------------------------------------------------------------------------------


@pytest.fixture
def exact_kernels():
    """float32 without TF32 (a pack's grouped convolutions then round as a member's own do), and
    deterministic cuDNN kernels (the same inputs, the same sums), put back afterwards."""
    backends = torch.backends
    saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.deterministic
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = False
    backends.cudnn.deterministic = True
    yield
    backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.deterministic = saved


# ResNet-20's batch norm over 16 images amplifies rounding from step to step (a pack and its members
# add in different orders): after 2 steps the members agree to about 1e-3, after 4 no longer.
@pytest.mark.parametrize("dataset, steps, tolerance", [
    ("mnist", 4, {"rtol": 1e-3, "atol": 1e-4}),
    ("cifar10", 2, {"rtol": 1e-2, "atol": 2e-3}),
])
def test_a_cuda_pack_trains_like_separate_models_in_float32(tmp_path, exact_kernels, dataset, steps, tolerance):
    config = vision_config(tmp_path, dataset, autocast=False, channels_last=False, augment=False)
    pack = PackedTrainer.build(config, range(3), HYPERPARAMS, device=CUDA)
    separate = [build_trainer(config, device=CUDA, seed=config.seed + member) for member in range(3)]
    for trainer, values in zip(separate, HYPERPARAMS):
        set_hyperparams(trainer.optimizer, **values)
    for indices in batches(pack, steps):
        losses, _ = pack.train_step(indices)
        for member, trainer in enumerate(separate):
            loss = trainer.train_step((trainer.x_train[indices[member]], trainer.y_train[indices[member]]))
            assert float(losses[member]) == pytest.approx(float(loss), rel=1e-3)
    for member, trainer in enumerate(separate):
        packed = pack.model.member_state_dict(member)
        for name, tensor in trainer.model.state_dict().items():  # weights and BatchNorm's running statistics
            assert packed[name].is_cuda
            torch.testing.assert_close(packed[name], tensor, **tolerance, msg=f"member {member}: {name}")


# float32 on the MNIST CNN, and the production setting (bf16, channels-last) on ResNet-20.
@pytest.mark.parametrize("dataset, fast", [("mnist", False), ("cifar10", True)], ids=["float32", "bf16-channels_last"])
def test_a_captured_pack_step_replays_what_the_eager_step_computes(tmp_path, exact_kernels, dataset, fast):
    config = vision_config(tmp_path, dataset, autocast=fast, channels_last=fast, augment=False)
    eager = PackedTrainer.build(config, range(3), HYPERPARAMS, device=CUDA)
    captured = PackedTrainer.build(config, range(3), HYPERPARAMS, device=CUDA, capture=True)
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if fast else {"rtol": 1e-4, "atol": 1e-5}
    explore_at = WARMUP_STEPS + 3  # after the capture: values change in the tensors the graph reads
    for step, indices in enumerate(batches(eager, explore_at + 4)):
        if step == explore_at:
            for pack in (eager, captured):
                pack.set_hyperparams(1, lr=0.2, momentum=0.8, weight_decay=1e-3)
                pack.exploit(source=0, target=2)
                pack.set_hyperparams(2, **pack.hyperparams(0))
            indices[2] = indices[0]  # member 2 is member 0 now: the same batch keeps them equal
        expected = eager.train_step(indices)
        replaying = captured.captured
        if replaying:  # a replay copies the indices in and launches the graph: no host sync
            torch.cuda.set_sync_debug_mode("error")
        try:
            got = captured.train_step(indices)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.testing.assert_close(got[0], expected[0], **tolerance)
        if step == explore_at:
            for name, tensor in captured.model.member_state_dict(0).items():
                torch.testing.assert_close(captured.model.member_state_dict(2)[name], tensor, msg=name)
    assert captured.captured and captured.static_step.calls == explore_at + 4
    assert_same_members(captured, eager, **tolerance)
    assert captured.hyperparams(1) == pytest.approx({"lr": 0.2, "momentum": 0.8, "weight_decay": 1e-3})


def test_exploits_inside_and_across_packs_stay_on_the_device(tmp_path):
    config = vision_config(tmp_path)  # CIFAR-10's defaults on CUDA: bf16 autocast, channels-last, augmentation
    donor = PackedTrainer.build(config, [0, 1, 2], HYPERPARAMS, device=CUDA)
    recipient = PackedTrainer.build(config, [3, 4, 5], HYPERPARAMS, device=CUDA, capture=True)
    for pack in (donor, recipient):
        pack.train_epoch()
    assert recipient.captured, "10 steps an epoch: the recipient replays its step by now"

    donor.exploit(source=0, target=2)  # inside a pack: an index copy on the device
    copy, original = donor.member_state(2), donor.member_state(0)
    for name, tensor in original["model"].items():
        assert copy["model"][name].is_cuda
        torch.testing.assert_close(copy["model"][name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(copy["optimizer"]["state"], original["optimizer"]["state"], rtol=0, atol=0)

    # Across packs a member travels as its slot of the donor's state on the CPU (Ray's object store).
    offered = torch.load(_saved(donor.state_dict()), map_location="cpu", weights_only=True)
    recipient.load_member_state(1, member_of(offered, 0))
    moved = recipient.member_state(1)
    for name, tensor in original["model"].items():
        assert moved["model"][name].is_cuda
        torch.testing.assert_close(moved["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert recipient.hyperparams(1) == pytest.approx(donor.hyperparams(0)), "a moved member brings its hyperparameters"
    trained = recipient.train_epoch()  # the captured graph now trains the moved member
    assert all(torch.isfinite(torch.tensor(member["train_loss"])) for member in trained)
    after = recipient.member_state(1)["model"]
    assert any(not torch.equal(after[name], tensor) for name, tensor in original["model"].items())


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# -- checkpoints, memory, resources ----------------------------------------------------------------


def test_checkpoints_of_cuda_members_and_packs_restore_on_the_gpu_and_open_on_the_cpu(ray_session, tmp_path, monkeypatch):
    config = vision_config(tmp_path)
    member = cuda_member(monkeypatch, PBTMember, config, member_config())
    member.train()
    saved = member.save()
    on_cpu = load_member_state(saved.checkpoint.path, "cpu")  # e.g. `pbt replay` on a machine without a GPU
    assert all(not t.is_cuda for t in on_cpu["trainer"]["model"].values())
    restored = cuda_member(monkeypatch, PBTMember, config, member_config(member=1))
    restored.restore(saved)
    for name, tensor in member.trainer.model.state_dict().items():
        assert restored.trainer.model.state_dict()[name].is_cuda
        torch.testing.assert_close(restored.trainer.model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    member.stop()
    restored.stop()

    pack_config = {"members": [0, 1, 2], "hyperparams": HYPERPARAMS, "pack": 0}
    pack = cuda_member(monkeypatch, PackTrial, config, pack_config)
    pack.train()
    saved = pack.save()
    at_save = [pack.pack.member_state(slot) for slot in range(3)]  # copies: the pack trains on
    pack.train()
    again = cuda_member(monkeypatch, PackTrial, config, pack_config)
    again.restore(saved)
    assert again.iteration == 1
    rng = load_pack_state(saved.checkpoint.path)["pack"]["rng"]
    assert torch.equal(torch.cuda.get_rng_state(CUDA), rng["cuda"]), "the batches and crops go on as they would have"
    for slot, expected in enumerate(at_save):
        restored = again.pack.member_state(slot)
        for name, tensor in expected["model"].items():
            assert restored["model"][name].is_cuda
            torch.testing.assert_close(restored["model"][name], tensor, rtol=0, atol=0, msg=f"slot {slot}: {name}")
        torch.testing.assert_close(restored["optimizer"]["state"], expected["optimizer"]["state"], rtol=0, atol=0)
    result = again.train()
    assert result["training_iteration"] == 2
    assert all(math.isfinite(report["train_loss"]) for report in result["members"].values())
    pack.stop()
    again.stop()


def test_the_gpu_line_reports_a_members_and_a_packs_first_epoch(ray_session, tmp_path, monkeypatch):
    config = vision_config(tmp_path)
    member = cuda_member(monkeypatch, PBTMember, config, member_config(member=3))
    first, second = member.train(), member.train()
    total = torch.cuda.get_device_properties(CUDA).total_memory / 2**20
    assert 0 < first["gpu_peak_mib"] < first["gpu_total_mib"] == pytest.approx(total)
    assert "gpu_peak_mib" not in second, "said once, after the first epoch"
    line = gpu_memory_line(member.config, first)
    assert line.startswith(f"  [gpu] member 3: peak GPU memory {first['gpu_peak_mib']:.0f} MiB of {total / 1024:.0f} GiB")
    assert f"by memory {int(total // first['gpu_peak_mib'])} such members fit" in line
    member.stop()

    captured = config.model_copy(update={"population": config.population.model_copy(update={"capture": "on"})})
    pack = cuda_member(monkeypatch, PackTrial, captured, {"members": [4, 5], "hyperparams": HYPERPARAMS[:2], "pack": 0})
    result = pack.train()
    assert result["gpu_peak_mib"] > 0 and result["step_captured"] is True
    assert gpu_memory_line(pack.config, result).startswith("  [gpu] pack of members 4, 5: peak GPU memory ")
    assert gpu_memory_line(pack.config, result).endswith("its training step replayed as a CUDA graph")
    pack.stop()


def test_a_reused_actor_gives_the_last_members_gpu_memory_back(ray_session, tmp_path, monkeypatch):
    member = cuda_member(monkeypatch, PBTMember, vision_config(tmp_path, width=1.0), member_config())
    member.train()
    held = trainer_bytes(member.trainer)
    allocated_before = torch.cuda.memory_allocated(CUDA)
    seen = []
    build = member._new_trainer

    def watched(new_config: dict):  # the moment the next trial's member is built
        seen.append((torch.cuda.memory_allocated(CUDA), torch.cuda.memory_reserved(CUDA),
                     torch.cuda.max_memory_reserved(CUDA)))
        return build(new_config)

    monkeypatch.setattr(member, "_new_trainer", watched)
    assert member.reset(member_config(member=5, lr=0.02))
    result = member.train()  # no restore followed: a fresh trial on the reused actor
    [(allocated, reserved, peak)] = seen
    assert held > 2**20 and allocated_before - allocated >= 0.9 * held, "the last member's tensors were freed first"
    assert peak == reserved, "and the peak was reset, so the new trial's [gpu] line is its own"
    assert "gpu_peak_mib" in result
    member.stop()


def trainer_bytes(trainer) -> int:
    """What a vision member holds on the GPU: its images and labels, weights, gradients, momentum."""
    tensors = [getattr(trainer, name) for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")]
    tensors += [p for p in trainer.model.parameters()] + [p.grad for p in trainer.model.parameters() if p.grad is not None]
    tensors += [t for state in trainer.optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    assert all(t.is_cuda for t in tensors)
    return sum(t.numel() * t.element_size() for t in tensors)


def test_the_resources_check_takes_a_quarter_gpu_and_refuses_more_gpus_than_there_are(tmp_path, capsys):
    gpus = torch.cuda.device_count()
    machine = local_machine()
    assert machine[0]["GPU"] == gpus >= 1
    check_resources(Resources(cpu=1, gpu=0.25), machine, "this machine")
    with pytest.raises(PbtError, match=rf"resources.gpu={gpus + 1}: each member asks for {gpus + 1} GPUs on one "
                                       rf"machine, but this machine has {gpus} "):
        check_resources(Resources(gpu=gpus + 1), machine, "this machine")

    path = experiment_file(tmp_path, "mnist", resources={"cpu": 1, "gpu": gpus + 1})
    assert main(["lr-find", str(path)]) == 2
    assert f"resources.gpu={gpus + 1}: each member asks for" in capsys.readouterr().err
    assert not (tmp_path / "results" / "mnist" / "lr_range.json").exists(), "refused before anything ran"


def experiment_file(folder: Path, dataset: str, **sections) -> Path:
    """An experiment YAML on images written under `folder/data`, its results under `folder/results`."""
    if not (folder / "data").exists():
        write_images(folder / "data", dataset)
    narrow = {"width": 0.25} if dataset == "cifar10" else {}
    path = folder / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump({
        "name": dataset, "trainable": dataset, "storage_path": str(folder / "results"),
        "trainer": {"data_dir": str(folder / "data"), "val_size": 40, "batch_size": 16, **narrow},
        **sections,
    }))
    return path


# -- the commands ----------------------------------------------------------------------------------


def test_lr_find_sweeps_on_the_gpu(tmp_path, capsys):
    path = experiment_file(tmp_path, "mnist", resources={"cpu": 1, "gpu": 0.25}, lr_range={"seeds": 1})
    torch.cuda.reset_peak_memory_stats(CUDA)
    already = torch.cuda.memory_allocated(CUDA)
    assert main(["lr-find", str(path)]) == 0, capsys.readouterr().err
    assert torch.cuda.max_memory_allocated(CUDA) > already, "the sweep's member trained on the GPU"
    found = json.loads((tmp_path / "results" / "mnist" / "lr_range.json").read_text())
    assert 0 < found["lr_low"] < found["lr_high"] and found["config"]["resources"]["gpu"] == 0.25
    assert (tmp_path / "results" / "mnist" / "lr_range.png").is_file()


@pytest.mark.parametrize("command, population, gpu_line", [
    ("run", {"pack": "auto"}, "[gpu] pack of members 0, 1, 2, 3: peak GPU memory"),
    ("run", {"pack": 1}, "[gpu] member 0: peak GPU memory"),
    ("pbt", {"pack": "auto", "capture": "on"}, "its training step replayed as a CUDA graph"),
], ids=["packed", "pack=1", "packed-captured"])
def test_pbt_on_cifar10_files_trains_through_ray_on_the_gpu(ray_session, tmp_path, command, population, gpu_line):
    path = experiment_file(tmp_path, "cifar10", resources={"cpu": 1, "gpu": 0.25}, search={"lr": {"low": 0.01, "high": 0.05}},
                           population={"size": 4, "epochs": 2, "perturbation_interval": 1, "quantile_fraction": 0.25,
                                       **population})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([command, str(path)])
    text = out.getvalue()
    assert code == 0, text[-3000:]
    assert gpu_line in text, text[-3000:]
    folder = tmp_path / "results" / "cifar10"
    arms = ("pbt", "grid", "one_cycle") if command == "run" else ("pbt",)
    for arm in arms:  # four members, four grid points, one one-cycle run: each trained both epochs
        reports = [json.loads(line) for line in (folder / arm / "reports.jsonl").read_text().splitlines()]
        labels = {r["label"] for r in reports}
        assert len(labels) == (1 if arm == "one_cycle" else 4), labels
        assert all({r["epoch"] for r in reports if r["label"] == label} == {1, 2} for label in labels)
    packing = json.loads((folder / "pbt" / "packing.json").read_text())
    if population["pack"] == "auto":  # one GPU: one slot, so one pack of all four on the whole GPU
        assert packing["groups"] == [[0, 1, 2, 3]] and packing["resources"]["gpu"] == 1.0
    else:
        assert packing["groups"] == []
    lineage = json.loads((folder / "lineage.json").read_text())
    assert [entry["epoch"] for entry in lineage["best"]["schedule"]] == [1, 2]


EPOCHS = 24
EXPLOIT = re.compile(r"\[pbt\] member \d+ copies member \d+ \(epoch \d+\)")
STOPPED = re.compile(r"^pbt: stopped by Ctrl-C in pbt: .*; the results so far are kept, continue with: pbt resume (\S+)$", re.M)


def test_ctrl_c_and_resume_of_a_gpu_run(tmp_path):
    path = experiment_file(tmp_path, "cifar10", resources={"cpu": 1, "gpu": 0.25}, search={"lr": {"low": 0.01, "high": 0.05}},
                           population={"size": 4, "epochs": EPOCHS, "perturbation_interval": 2, "quantile_fraction": 0.25})
    text = run_pbt(tmp_path, "first", ["pbt", str(path)], interrupt_after_exploits=2)
    folder = tmp_path / "results" / "cifar10"
    assert [(tmp_path / shown).resolve() for shown in STOPPED.findall(text)] == [folder.resolve()], text[-2000:]
    assert not (folder / "lineage.json").exists(), "a stopped run is not presented as finished"
    text = run_pbt(tmp_path, "resumed", ["resume", str(folder)])
    assert "Best member" in text, text[-2000:]
    lineage = json.loads((folder / "lineage.json").read_text())
    assert [entry["epoch"] for entry in lineage["best"]["schedule"]] == list(range(1, EPOCHS + 1))


def run_pbt(folder: Path, name: str, argv: list[str], interrupt_after_exploits: int = 0) -> str:
    """`python -m pbt ARGV` in its own process group, as a terminal runs it (a fresh local Ray);
    with `interrupt_after_exploits`, Ctrl-C (SIGINT to the group) once that many exploits were
    printed, expecting the shell's 130; else its end, expecting 0. Its whole output."""
    out = folder / f"{name}.out"
    driver = subprocess.Popen([sys.executable, "-m", "pbt", *argv], start_new_session=True, cwd=folder,
                              env={**os.environ, "RAY_ADDRESS": ""}, stdout=out.open("w"), stderr=subprocess.STDOUT)
    try:
        if not interrupt_after_exploits:
            assert driver.wait(timeout=300) == 0, out.read_text()[-3000:]
            return out.read_text()
        deadline = time.monotonic() + 240
        while len(EXPLOIT.findall(out.read_text())) < interrupt_after_exploits:
            assert driver.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "no exploits within 4 minutes"
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, out.read_text()[-3000:]
        return out.read_text()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
