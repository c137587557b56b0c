"""Training-step speed of a built-in trainer against a bare PyTorch loop on the same model and data.

Both train the same model on the same tensors with the same optimizer (and, for the vision tasks,
the same on-device augmentation, normalisation, autocast and memory format); epochs alternate
between the two (ABAB...) so that a noisy, shared machine slows both alike, and the median epoch
time of each is compared. Target: the trainer runs at >= 0.95x the bare loop's speed.

    python scripts/bench_step.py --epochs 30                          # MNIST-1D
    python scripts/bench_step.py --task cifar10 --model resnet20 --epochs 10
    python scripts/bench_step.py --task mnist --epochs 10

The vision tasks read `--data-dir` when given; otherwise random images of the data set's shape
are written in its real file format to a temporary folder (no download), `--train-images` of them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pbt.config import validate_config
from pbt.optim import make_optimizer, set_hyperparams
from pbt.registry import build_trainer, pick_device
from pbt.trainer import TensorClassificationTrainer

# By module path, not entry-point name: the benchmark also runs from a checkout that is not installed.
VISION_TRAINABLES = {"mnist": "trainables.vision:MNISTTrainer", "fashion_mnist": "trainables.vision:FashionMNISTTrainer",
                     "cifar10": "trainables.vision:CIFAR10Trainer"}


def bare_epoch(trainer: TensorClassificationTrainer, model, optimizer) -> None:
    """The loop a user would write by hand: randperm, slice, (vision: the trainer's own on-device
    augmentation and normalisation, `inputs`), forward, backward, step; on the trainer's tensors,
    with its own copy of the model and optimizer."""
    x, y, batch_size = trainer.x_train, trainer.y_train, trainer.batch_size
    order = torch.randperm(len(x), device=x.device)
    for start in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        with trainer.precision():
            loss = F.cross_entropy(model(trainer.inputs(x[idx], train=True)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def trainer_section(args: argparse.Namespace, data_dir: Path) -> dict:
    section = {"optimizer": args.optimizer, "batch_size": args.batch_size}
    if args.task != "mnist1d":
        section.update(data_dir=str(data_dir), val_size=min(1000, args.train_images // 4))
        section.update({"model": args.model} if args.model else {})
    return section


def write_random_images(task: str, folder: Path, images: int) -> None:
    """Random images in the data set's real file format, `images` training ones (tests/vision_files)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from vision_files import write_cifar10, write_mnist

    if task == "cifar10":
        write_cifar10(folder, per_batch=images // 5, test=256)
    else:
        write_mnist(folder, train=images, test=256, folder={"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[task])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d", choices=["mnist1d", "mnist", "fashion_mnist", "cifar10"])
    parser.add_argument("--model", default=None, help="vision tasks: mnist_cnn, resnet20 or resnet56 (default: the task's)")
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs of each")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 for MNIST-1D, 128 for vision")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a PBT member gets 1 CPU)")
    parser.add_argument("--data-dir", default=None, help="vision tasks: torchvision's files (default: random images)")
    parser.add_argument("--train-images", type=int, default=4096, help="vision, random images: training images written")
    parser.add_argument("--gpu", action="store_true", help="train on CUDA when there is a GPU")
    args = parser.parse_args()
    args.batch_size = args.batch_size or (32 if args.task == "mnist1d" else 128)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(args.data_dir or scratch)
        if args.task != "mnist1d" and not args.data_dir:
            write_random_images(args.task, data_dir, args.train_images)
        config = validate_config({"trainable": VISION_TRAINABLES[args.task], "trainer": trainer_section(args, data_dir)})
        device = pick_device(args.gpu)
        trainer = build_trainer(config, device=device)
        ours, bare = compare(trainer, args)
    steps = trainer.steps_per_epoch()
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    model = f", {type(trainer.model).__name__}" if args.task != "mnist1d" else ""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"{args.task}{model}, {args.optimizer}, batch {args.batch_size}, {steps} steps/epoch, {where}, "
          f"{args.epochs} epochs each, interleaved")
    for name, seconds in (("bare PyTorch loop", bare_median), ("pbt trainer", ours_median)):
        print(f"  {name:<18}  {seconds * 1e3:8.1f} ms/epoch   {seconds / steps * 1e6:7.0f} us/step   "
              f"{steps * args.batch_size / seconds:9.0f} samples/s")
    print(f"  speed, trainer / bare: {bare_median / ours_median:.3f}x   (target >= 0.95x)")


def compare(trainer: TensorClassificationTrainer, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Median-ready epoch times of the trainer and of the bare loop, interleaved, after 2 warm-up epochs each."""
    set_hyperparams(trainer.optimizer, lr=0.01, momentum=0.9)
    model = copy.deepcopy(trainer.model)
    optimizer = make_optimizer(args.optimizer, model.parameters(), lr=0.01, momentum=0.9)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    ours, bare = [], []
    for epoch in range(args.epochs + 2):
        for run, times in ((trainer.train_epoch, ours), (lambda: bare_epoch(trainer, model, optimizer), bare)):
            sync()
            started = time.perf_counter()
            run()
            sync()
            if epoch >= 2:
                times.append(time.perf_counter() - started)
    return ours, bare


if __name__ == "__main__":
    main()
