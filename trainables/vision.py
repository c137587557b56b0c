"""Vision built-ins: MNIST, FashionMNIST and CIFAR-10 with the seed's small CNN or CIFAR ResNets.

The images live on the device as uint8 tensors (`trainables.vision_data`); every batch is
converted, normalised and (for CIFAR-10) augmented there, a whole batch at a time, so a step
never waits on a `DataLoader` or on the host. On CUDA the model runs channels-last under bf16
autocast with `cudnn.benchmark`; the loss stays on the device (no host sync per step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from pbt.config import StrictModel
from pbt.optim import OptimizerName, make_optimizer
from pbt.trainer import TensorClassificationTrainer
from trainables.vision_data import load_images, require_files, split_validation
from trainables.vision_models import build_model

DatasetName = Literal["mnist", "fashion_mnist", "cifar10"]
ModelName = Literal["mnist_cnn", "resnet20", "resnet56"]
CROP_PADDING = 4  # CIFAR-10's standard augmentation (He et al. 2016): pad 4, random 32x32 crop, flip


class VisionConfig(StrictModel):
    """The `trainer:` section of the vision built-ins (`trainable: mnist`, `fashion_mnist`, `cifar10`)."""

    dataset: DatasetName
    model: ModelName
    data_dir: str = Field("data", description="Where torchvision's files are (and a pbt-cache/ of tensors is written).")
    download: bool = Field(False, description="Let torchvision download missing files (needs internet).")
    optimizer: OptimizerName = "sgd"
    nesterov: bool = False
    batch_size: int = Field(128, ge=1)
    width: float = Field(1.0, gt=0, description="Multiplier on the model's channels.")
    val_size: int = Field(5000, ge=1, description="Training images held out (fixed) to choose members on.")
    augment: bool = Field(False, description="Random crop (4-pixel padding) and horizontal flip, on the device.")
    autocast: bool = Field(True, description="bf16 autocast on CUDA (ignored on the CPU).")
    channels_last: bool = Field(True, description="Channels-last memory format on CUDA (ignored on the CPU).")
    eval_batch_size: int = Field(1024, ge=1)
    train_limit: int | None = Field(None, ge=1, description="Train on this many images only (quick tries, tests).")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, folder: str) -> str:
        # Validated on the driver, where a relative path means something; workers run elsewhere.
        return str(Path(folder).expanduser().resolve())

    @model_validator(mode="after")
    def _files_there(self) -> VisionConfig:
        if not self.download:  # offline: say which files are missing before anything runs
            require_files(self.dataset, self.data_dir)
        return self


class MNISTConfig(VisionConfig):
    dataset: DatasetName = "mnist"
    model: ModelName = "mnist_cnn"


class FashionMNISTConfig(MNISTConfig):
    dataset: DatasetName = "fashion_mnist"


class CIFAR10Config(VisionConfig):
    dataset: DatasetName = "cifar10"
    model: ModelName = "resnet20"
    augment: bool = True


class VisionTrainer(TensorClassificationTrainer):
    """A torchvision data set on the device, a model from `trainables.vision_models`."""

    config_model = VisionConfig

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        settings = self.config_model.model_validate(config)
        data = load_images(settings.dataset, settings.data_dir, settings.download)
        (x_train, y_train), (x_val, y_val) = split_validation(data.x_train, data.y_train, settings.val_size)
        if settings.train_limit is not None:
            x_train, y_train = x_train[: settings.train_limit], y_train[: settings.train_limit]
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        self.x_val, self.y_val = x_val.to(device), y_val.to(device)
        self.x_test, self.y_test = data.x_test.to(device), data.y_test.to(device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.mean, device=device).view(shape)
        self.std = torch.tensor(data.std, device=device).view(shape)
        self.batch_size = min(settings.batch_size, len(self.x_train))
        self.eval_batch_size = settings.eval_batch_size
        self.augment = settings.augment
        cuda = device.type == "cuda"
        self.autocast = cuda and settings.autocast
        self.memory_format = torch.channels_last if cuda and settings.channels_last else torch.contiguous_format
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        model = build_model(settings.model, in_channels=x_train.shape[1], width=settings.width, image_size=x_train.shape[-1])
        self.model = model.to(device, memory_format=self.memory_format)
        self.optimizer = make_optimizer(settings.optimizer, self.model.parameters(), nesterov=settings.nesterov)

    @classmethod
    def cuda_pack_obstacle(cls, settings: dict[str, Any]) -> str | None:
        # Seen on an H100 (torch 2.11): bf16 autocast without channels-last fails in BatchNorm
        # under vmap, channels-last without autocast in vmap's `is_contiguous`; both or neither work.
        fields = cls.config_model.model_fields
        autocast, channels_last = (settings.get(name, fields[name].default) for name in ("autocast", "channels_last"))
        if autocast == channels_last:
            return None
        return (f"trainer.autocast={autocast} with trainer.channels_last={channels_last} fails inside PyTorch's "
                "vmap on CUDA (set both to true, or both to false)")

    def inputs(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.augment:
            x = random_crop_and_flip(x, CROP_PADDING)
        return ((x.float() / 255 - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def precision(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)


def random_crop_and_flip(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image of the batch zero-padded by `padding`, cropped back at a random offset, and
    flipped left-right with probability 1/2: one gather for the whole batch, on its device."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, count, 1), device=images.device)
    rows = offsets[0] + torch.arange(height, device=images.device)  # (count, height)
    cols = offsets[1] + torch.arange(width, device=images.device)  # (count, width)
    flip = torch.rand(count, 1, device=images.device) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)  # reading the columns backwards flips the image
    batch = torch.arange(count, device=images.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (count, height, width, channels)
    return crops.permute(0, 3, 1, 2)


class MNISTTrainer(VisionTrainer):
    """MNIST with the seed's small CNN (`trainable: mnist`)."""

    config_model = MNISTConfig


class FashionMNISTTrainer(VisionTrainer):
    """FashionMNIST with the seed's small CNN (`trainable: fashion_mnist`)."""

    config_model = FashionMNISTConfig


class CIFAR10Trainer(VisionTrainer):
    """CIFAR-10 with ResNet-20 (or `model: resnet56`), crop-and-flip augmentation (`trainable: cifar10`)."""

    config_model = CIFAR10Config
