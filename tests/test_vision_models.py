"""The vision built-ins' models: published sizes, shapes, channels-last, and that they learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.vision_models import MODELS, BasicBlock, CIFARResNet, MNISTConvNet, build_model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("depth", "exact", "published"),
    # He et al. 2016, table 6, with option A shortcuts (no parameters). These are also the counts
    # that the widely used reference implementation prints. Projection (option B) shortcuts would
    # add 2,752 to each (1x1 conv and BN at the two downsampling blocks: 512+64 and 2,048+128),
    # giving 272,474 and 855,770: a count of that size means a shortcut that learns.
    [(20, 269_722, 0.27e6), (56, 853_018, 0.85e6)],
)
def test_resnets_have_the_published_parameter_counts(depth, exact, published):
    model = CIFARResNet(depth)
    assert count(model) == exact
    assert abs(count(model) - published) / published < 0.01


def test_mnist_cnn_has_the_seed_size_and_grows_with_width():
    # Width 1: conv 1->8 (80), conv 8->8 (584), dense 72->32 (2,336), dense 32->10 (330).
    assert count(MNISTConvNet()) == 3_330
    # Width w: 8w filters and 32w hidden units. The second conv and the first dense layer grow
    # as w^2, the first conv and the last layer as w, so doubling the width gives 3.7x the
    # weights, not 2x or 4x: 16 filters and 64 units are 160 + 2,320 + 9,280 + 650.
    assert count(MNISTConvNet(width=2)) == 12_410
    assert count(MNISTConvNet(width=4)) == 47_850  # 32 filters, 128 units: 3.86x again
    assert count(MNISTConvNet(width=0.5)) == 950  # 4 filters, 16 units
    assert count(MNISTConvNet(width=0.01)) > 0, "a tiny width keeps at least one filter"
    # The adaptive pool makes the dense layers independent of the image size.
    assert count(MNISTConvNet(image_size=32)) == count(MNISTConvNet(image_size=28))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mnist_cnn", (4, 1, 28, 28)), ("mnist_cnn", (4, 3, 32, 32)), ("resnet20", (4, 3, 32, 32))],
)
def test_forward_shapes_and_channels_last_agree(name, shape):
    torch.manual_seed(0)
    model = build_model(name, in_channels=shape[1], image_size=shape[-1]).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    assert expected.shape == (4, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_option_a_shortcut_keeps_channels_last_and_pads_zeros():
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # The old channels sit in the middle, subsampled; the 16 new ones are zeros (8 on each side).
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_option_a_shortcut_has_no_parameters():
    block = BasicBlock(16, 32, stride=2)
    # Only the block's own convolutions and batch norms: 16*32*9 + 2*32 + 32*32*9 + 2*32.
    assert [name for name, _ in block.named_children()] == ["conv1", "bn1", "conv2", "bn2"]
    assert count(block) == 4_608 + 64 + 9_216 + 64 == 13_952
    downsampling = [b for b in CIFARResNet(20).stages if isinstance(b, BasicBlock) and b.stride == 2]
    assert len(downsampling) == 2
    for b in downsampling:
        convs_and_norms = count(b.conv1) + count(b.bn1) + count(b.conv2) + count(b.bn2)
        assert count(b) == convs_and_norms


def test_resnet_convs_use_he_initialisation():
    torch.manual_seed(0)
    conv = CIFARResNet(20).stages[-1].conv2  # 64 -> 64, 3x3: fan_out 576
    # He normal keeps a variance of 2/fan; PyTorch's default would give about a sixth of that.
    assert conv.weight.var().item() == pytest.approx(2 / 576, rel=0.05)


@pytest.mark.parametrize("name", MODELS)
def test_one_sgd_step_lowers_the_loss_on_its_batch(name):
    torch.manual_seed(0)
    channels, size = (1, 28) if name == "mnist_cnn" else (3, 32)
    model = build_model(name, in_channels=channels, image_size=size).train()
    x, y = torch.randn(8, channels, size, size), torch.randint(0, 10, (8,))
    # A small step: at He initialisation, without warm-up, ResNet-56's gradients are large enough
    # that lr 0.05 overshoots on one batch of 8 (the paper warms up ResNet-110 for that reason).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y)  # train mode: the same batch statistics as the step saw
    assert after.item() < loss.item()


@pytest.mark.parametrize("depth", [21, 19, 2, 0])
def test_a_depth_that_is_not_6n_plus_2_is_refused(depth):
    with pytest.raises(ValueError, match=r"6n\+2 \(20, 32, 44, 56, 110"):
        CIFARResNet(depth)


def test_an_unknown_model_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="mnist_cnn, resnet20, resnet56"):
        build_model("resnet18", in_channels=3)


def test_build_model_maps_names_to_architectures():
    assert isinstance(build_model("mnist_cnn", in_channels=1), MNISTConvNet)
    assert count(build_model("resnet20", in_channels=3)) == 269_722
    assert count(build_model("resnet56", in_channels=3)) == 853_018
    # A grey-scale ResNet only changes the stem: 2 fewer input channels of 16 3x3 filters.
    assert count(build_model("resnet20", in_channels=1)) == 269_722 - 2 * 16 * 9
    assert count(build_model("resnet20", in_channels=3, classes=100)) == 269_722 + 90 * 65
