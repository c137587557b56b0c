"""MNIST-1D (Greydanus 2020): the embedded default task, generated offline in seconds.

The data set is made by `mnist1d.data.make_dataset` (never downloaded) and cached as `.npz` so
that a population of trainers does not regenerate it once per member. The model is the paper's
small 1-D CNN (three strided convolutions and a linear layer, about 5k weights at width 1),
which reaches about 94% test accuracy in the paper.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from pbt.config import StrictModel
from pbt.optim import OptimizerName, make_optimizer
from pbt.trainer import TensorClassificationTrainer


class MNIST1DConfig(StrictModel):
    """The `trainer:` section for `trainable: mnist1d`."""

    optimizer: OptimizerName = "sgd"
    nesterov: bool = False
    batch_size: int = Field(32, ge=1)
    width: float = Field(1.0, gt=0, description="Channel multiplier on the paper's 25 channels.")
    num_samples: int = Field(5000, ge=100, description="Generated examples; 80% train, 20% test (the paper's split).")
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Share of the training split held out for validation (800 of 4000 examples): with 400, "
        "the noise of one accuracy reading (about 1.3 points) swamped the differences PBT selects on.",
    )
    data_seed: int = Field(42, description="Seed of the generated data set (42 is the paper's).")
    cache_dir: str | None = Field(None, description="Where the generated data set is cached; default ~/.cache/pbt.")


class MNIST1DConvNet(torch.nn.Module):
    """The CNN of the MNIST-1D paper, with a width multiplier."""

    def __init__(self, width: float = 1.0, length: int = 40, classes: int = 10) -> None:
        super().__init__()
        channels = max(1, round(25 * width))
        self.features = torch.nn.Sequential(
            torch.nn.Conv1d(1, channels, 5, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, length)).numel()
        self.classifier = torch.nn.Linear(flat, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


class MNIST1DTrainer(TensorClassificationTrainer):
    """MNIST-1D with the paper's CNN; data on the device, batched by `randperm` index."""

    config_model = MNIST1DConfig

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        settings = MNIST1DConfig.model_validate(config)
        data = load_mnist1d(settings.num_samples, settings.data_seed, settings.cache_dir)
        x, y = data["x"], data["y"]
        n_val = max(1, round(len(x) * settings.val_fraction))
        # The validation split is fixed (the data set is already shuffled by its own seed).
        # Copies: the cached arrays are shared by every trainer in this process.
        as_x = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        as_y = lambda a: torch.tensor(a, dtype=torch.long, device=device)  # noqa: E731
        self.x_train, self.y_train = as_x(x[n_val:]), as_y(y[n_val:])
        self.x_val, self.y_val = as_x(x[:n_val]), as_y(y[:n_val])
        self.x_test, self.y_test = as_x(data["x_test"]), as_y(data["y_test"])
        self.batch_size = min(settings.batch_size, len(self.x_train))
        self.model = MNIST1DConvNet(settings.width, length=x.shape[1]).to(device)
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(), nesterov=settings.nesterov)


def load_mnist1d(num_samples: int = 5000, seed: int = 42, cache_dir: str | None = None) -> dict[str, np.ndarray]:
    """The MNIST-1D arrays `x, y, x_test, y_test`, generated once and then read from a cache.

    Within a process the arrays are kept in memory too: a Ray actor that trains one population
    member after another builds a trainer per member and should not read the file each time.
    """
    root = Path(cache_dir or os.environ.get("PBT_CACHE_DIR") or Path.home() / ".cache" / "pbt").expanduser()
    return _load_cached(num_samples, seed, str(root))


@functools.lru_cache(maxsize=4)
def _load_cached(num_samples: int, seed: int, root_text: str) -> dict[str, np.ndarray]:
    # The key names the generator's version rather than its arguments, so a cache hit needs no
    # import of mnist1d (0.6 s, paid by every worker process).
    key_fields = {"num_samples": num_samples, "seed": seed, "mnist1d": importlib.metadata.version("mnist1d")}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(root_text)
    path = root / f"mnist1d-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            data = {name: cached[name] for name in cached.files}
    else:
        data = _generate(num_samples, seed)
        root.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: parallel members may generate at once; readers never see half a file.
        with tempfile.NamedTemporaryFile(dir=root, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **data)
        os.replace(tmp.name, path)
    for array in data.values():
        array.setflags(write=False)  # shared by every trainer of this process
    return data


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=num_samples, seed=seed)
    args.pop("url")  # we never download

    # make_dataset reseeds the global `random` and numpy RNGs; keep the caller's streams intact.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        dataset = make_dataset(ObjectView(args))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {name: np.asarray(dataset[name]) for name in ("x", "y", "x_test", "y_test")}
