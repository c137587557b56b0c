"""The image models of the vision built-ins: the seed experiment's small MNIST CNN and CIFAR ResNets.

The small CNN reproduces the seed article's experiment (a population of tiny MNIST networks,
scaled in width); the ResNets are the standard CIFAR-10 benchmark of He et al. (2016), section
4.2, whose parameter counts (0.27M for ResNet-20, 0.85M for ResNet-56) the tests pin, so that a
result here can be set beside the published ones. Both take a `width` multiplier on their
channels, the knob the seed article turned to scale model size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("mnist_cnn", "resnet20", "resnet56")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class MNISTConvNet(nn.Module):
    """The seed experiment's small MNIST CNN: two convolutional and two dense layers (TensorFlow's
    tutorial network as the seed article trained it, about 3,300 weights at width 1); `width`
    scales the convolutional filters and the first dense layer, as the seed article scaled model size."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        filters, hidden = _scaled(8, width), _scaled(32, width)
        pooled = 3
        if image_size < 4:
            raise ValueError(f"image_size must be at least 4 (two 2x2 max-pools), got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            # A fixed 3x3 grid whatever the image size: MNIST's 28 and CIFAR's 32 pixels give the
            # same dense layers, so one width means one model size on every data set.
            nn.AdaptiveAvgPool2d(pooled),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters * pooled * pooled, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut; option A when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A (He et al. 2016): identity, or subsampling plus zero channels; no parameters.

        Slicing and `F.pad` keep a channels-last input channels-last, where a `torch.cat` with a
        zeros tensor or a reshape could silently fall back to the contiguous layout.
        """
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # Half the new channels before, half after, as the reference implementations pad.
            before = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CIFARResNet(nn.Module):
    """ResNet-20/32/44/56/110 for 32x32 images (He et al. 2016, section 4.2): 3 stages of n basic
    blocks, 16/32/64 filters (times `width`), option A shortcuts (identity; when the shape changes,
    stride-2 subsampling and zero-padding of the new channels: no parameters)."""

    def __init__(self, depth: int, classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        stages = [_scaled(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stages[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(stages[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        channels = stages[0]
        for index, out_channels in enumerate(stages):
            for block in range(blocks):
                # Every stage but the first halves the feature map in its first block.
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He initialisation, as the paper and its reference implementations use: PyTorch's
                # default draws with a variance of 1/(3 fan_in), a sixth of what ReLU stacks keep.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def build_model(name: str, in_channels: int, classes: int = 10, width: float = 1.0, image_size: int = 32) -> nn.Module:
    """The model called `name` (one of `MODELS`) for images of `in_channels` x `image_size`^2."""
    if name == "mnist_cnn":
        return MNISTConvNet(in_channels, classes, width, image_size)
    if name == "resnet20":
        return CIFARResNet(20, classes, width, in_channels)
    if name == "resnet56":
        return CIFARResNet(56, classes, width, in_channels)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
