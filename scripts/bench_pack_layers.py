"""What the CPU pack's own layer paths (`pbt/packed_layers.py`) buy, per built-in model.

One pack of `--members` members of each built-in architecture is trained for a few steps three
ways, side by side in one process on one thread (rounds interleaved, so a noisy machine slows all
three alike; the median step is compared):

- vmap's rules: every layer through `torch.func.vmap`'s own batching rules;
- + convolutions: the convolutions on the pack's channels-last path (what packs did before pooling
  got its own path);
- + pooling: convolutions and pooling layers on plain tensors (what packs do now).

A step is the pack's forward, backward and SGD step on random inputs of the data set's shape.

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

from pbt.packed import PackedModel
from pbt.packed_layers import CONVOLUTIONS, POOLING, _convolution, _pooling
from pbt.packed_optim import PackedOptimizer
from trainables.mnist1d import MNIST1DConvNet
from trainables.vision_models import build_model

# name: (model factory, one example's shape)
MODELS = {
    "MNIST-1D CNN": (lambda: MNIST1DConvNet(), (40,)),
    "mnist_cnn (28x28)": (lambda: build_model("mnist_cnn", 1, image_size=28), (1, 28, 28)),
    "resnet20 (32x32)": (lambda: build_model("resnet20", 3), (3, 32, 32)),
}


def patched(template: torch.nn.Module, kinds: tuple[type, ...]) -> torch.nn.Module:
    """`template` with the pack's own path on the layers of `kinds` only (the bench compares subsets
    of what `fast_layers` does, so it sets the forwards itself)."""
    template = copy.deepcopy(template)
    for module in template.modules():
        if type(module) in kinds and type(module) in CONVOLUTIONS:
            module.forward = types.MethodType(_convolution, module)
        elif type(module) in kinds and type(module) in POOLING:
            module.forward = types.MethodType(_pooling, module)
    return template


def step_seconds(pack: PackedModel, optimizer: PackedOptimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    started = time.perf_counter()
    logits = pack(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def compare(factory, shape: tuple[int, ...], members: int, batch: int, steps: int, rounds: int) -> list[float]:
    """Median step seconds of each variant (vmap's rules, + convolutions, + pooling)."""
    torch.manual_seed(0)
    models = [factory() for _ in range(members)]
    x, y = torch.randn(members, batch, *shape), torch.randint(0, 10, (members, batch))
    variants = []
    for kinds in ((), CONVOLUTIONS, (*CONVOLUTIONS, *POOLING)):
        pack = PackedModel(models)
        pack.template = patched(copy.deepcopy(models[0]).to("meta"), kinds)
        optimizer = PackedOptimizer("sgd", list(pack.params.values()), members)
        variants.append((pack, optimizer, []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap's per-member fallback warns once per layer; the times say it
        for round_ in range(rounds + 1):  # the first round warms up and is not counted
            for pack, optimizer, times in variants:
                seconds = [step_seconds(pack, optimizer, x, y) for _ in range(steps)]
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
    print(f"  {'model':<20}{'vmap rules':>12}{'+ convs':>10}{'+ pooling':>11}{'pooling gain':>14}{'total gain':>12}")
    for name, (factory, shape) in MODELS.items():
        own, convs, pooling = compare(factory, shape, args.members, args.batch, args.steps, args.rounds)
        print(f"  {name:<20}{own * 1e3:12.1f}{convs * 1e3:10.1f}{pooling * 1e3:11.1f}"
              f"{convs / pooling:13.2f}x{own / pooling:11.2f}x", flush=True)


if __name__ == "__main__":
    main()
