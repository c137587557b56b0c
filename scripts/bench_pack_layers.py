"""What the CPU pack's own layer paths (`pbt/packed_layers.py`) buy, per built-in model.

One pack of `--members` members of each built-in architecture is trained for a few steps three
ways, side by side in one process on one thread (rounds interleaved, so a noisy machine slows all
three alike; the median step is compared):

- vmap's rules: every layer through `torch.func.vmap`'s own batching rules;
- + convolutions: the convolutions on the pack's channels-last path (what packs did before pooling
  and batch norm got theirs);
- + pooling, batch norm: convolutions, pooling and batch norm layers on plain tensors (what packs
  do now);

and, for reference, the same members as separate models stepped one after another with
`torch.optim.SGD` (what one process per member does, without the processes). A step is every
member's forward, backward and SGD step on random inputs of the data set's shape.

    python scripts/bench_pack_layers.py --members 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import types
import warnings

import torch
import torch.nn.functional as F

from pbt.engines.packed.layers import BATCH_NORMS, CONVOLUTIONS, POOLING, _fast_forward
from pbt.engines.packed.model import PackedModel
from pbt.engines.packed.optim import PackedOptimizer
from trainables.mnist1d import MNIST1DConvNet
from trainables.vision_models import build_model


class MNIST1DBatchNormNet(MNIST1DConvNet):
    """The MNIST-1D CNN with a BatchNorm1d after every convolution, as a user might write it."""

    def __init__(self) -> None:
        super().__init__()
        layers = []
        for layer in self.features:
            layers.append(layer)
            if isinstance(layer, torch.nn.Conv1d):
                layers.append(torch.nn.BatchNorm1d(layer.out_channels))
        self.features = torch.nn.Sequential(*layers)


# name: (model factory, one example's shape)
MODELS = {
    "MNIST-1D CNN": (lambda: MNIST1DConvNet(), (40,)),
    "MNIST-1D CNN + BN": (lambda: MNIST1DBatchNormNet(), (40,)),
    "mnist_cnn (28x28)": (lambda: build_model("mnist_cnn", 1, image_size=28), (1, 28, 28)),
    "resnet20 (32x32)": (lambda: build_model("resnet20", 3), (3, 32, 32)),
}


def patched(template: torch.nn.Module, kinds: tuple[type, ...]) -> torch.nn.Module:
    """`template`, given the pack's own path on the layers of `kinds` only (the bench compares subsets
    of what `fast_layers` does, so it sets the forwards itself)."""
    for module in template.modules():
        forward = _fast_forward(module) if type(module) in kinds else None
        if forward is not None:
            module.forward = types.MethodType(forward, module)
    return template


def step_seconds(pack: PackedModel, optimizer: PackedOptimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    started = time.perf_counter()
    logits = pack(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def separate_step_seconds(models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer], x: torch.Tensor,
                          y: torch.Tensor) -> float:
    started = time.perf_counter()
    for model, optimizer, x_, y_ in zip(models, optimizers, x, y):
        loss = F.cross_entropy(model(x_), y_)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def compare(factory, shape: tuple[int, ...], members: int, batch: int, steps: int, rounds: int) -> list[float]:
    """Median step seconds of each variant (vmap's rules, + convolutions, + pooling and batch norm, one by one)."""
    torch.manual_seed(0)
    models = [factory() for _ in range(members)]
    x, y = torch.randn(members, batch, *shape), torch.randint(0, 10, (members, batch))
    variants = []
    for kinds in ((), CONVOLUTIONS, (*CONVOLUTIONS, *POOLING, *BATCH_NORMS)):
        pack = PackedModel(models)
        pack.template = patched(copy.deepcopy(models[0]).to("meta"), kinds)
        optimizer = PackedOptimizer("sgd", list(pack.params.values()), members)
        variants.append((pack, optimizer, []))
    separate = [copy.deepcopy(model) for model in models]
    variants.append((separate, [torch.optim.SGD(model.parameters(), lr=0.01) for model in separate], []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap's per-member fallback warns once per layer; the times say it
        for round_ in range(rounds + 1):  # the first round warms up and is not counted
            for pack, optimizer, times in variants:
                step = separate_step_seconds if isinstance(pack, list) else step_seconds
                seconds = [step(pack, optimizer, x, y) for _ in range(steps)]
                if round_:
                    times.append(statistics.median(seconds))
    return [statistics.median(times) for _, _, times in variants]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32, help="examples per member and step")
    parser.add_argument("--steps", type=int, default=10, help="steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"a pack of {args.members} members, batch {args.batch} each, one thread, torch {torch.__version__}; "
          f"median ms per step (forward, backward, SGD)")
    print(f"  {'model':<20}{'vmap rules':>12}{'+ convs':>10}{'+ pool, BN':>12}{'one by one':>12}"
          f"{'pool/BN gain':>14}{'total gain':>12}{'pack vs one by one':>20}")
    for name, (factory, shape) in MODELS.items():
        own, convs, pooling, separate = compare(factory, shape, args.members, args.batch, args.steps, args.rounds)
        print(f"  {name:<20}{own * 1e3:12.1f}{convs * 1e3:10.1f}{pooling * 1e3:12.1f}{separate * 1e3:12.1f}"
              f"{convs / pooling:13.2f}x{own / pooling:11.2f}x{separate / pooling:19.2f}x", flush=True)


if __name__ == "__main__":
    main()
