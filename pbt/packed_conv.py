"""Convolutions of a pack on the CPU, as channels-last grouped convolutions.

Under `vmap`, PyTorch runs a convolution whose weights have a member dimension as one grouped
convolution (K groups) in the contiguous NC(H)W layout, and oneDNN is slow at that layout: for
the MNIST-1D CNN's layers (batch 32, 25 channels, 16 members) forward and backward took about 3x
as long as the same grouped convolution in channels-last layout (`scripts/bench_packed.py`
measures what it does to a whole epoch). `vmap`'s own batching rule cannot be told to use
channels-last (it queries `is_contiguous`, which vmap does not support), so `fast_convolutions`
gives the pack's template convolutions an `autograd.Function` with its own `vmap` rule: the
member dimension goes into the channels, the tensors into channels-last, and a Conv1d runs as a
Conv2d of height 1 (oneDNN has no channels-last 1-d layout).

The arithmetic is the same convolution; only the memory layout and the kernel oneDNN picks
change, so results agree with torch's own path to float rounding.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def fast_convolutions(model: torch.nn.Module) -> int:
    """Give every plain `Conv1d`/`Conv2d` of `model` (zero padding, numeric padding) the
    channels-last grouped path under vmap. Returns how many were changed; subclasses, other
    padding modes and string padding keep torch's own forward."""
    changed = 0
    for module in model.modules():
        if type(module) not in (torch.nn.Conv1d, torch.nn.Conv2d):
            continue
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            continue
        module.forward = types.MethodType(_forward, module)
        changed += 1
    return changed


def _forward(self: torch.nn.Conv1d | torch.nn.Conv2d, x: Tensor) -> Tensor:
    return _Convolution.apply(x, self.weight, self.bias, tuple(self.stride), tuple(self.padding),
                              tuple(self.dilation), self.groups)


class _Convolution(torch.autograd.Function):
    """`F.conv1d`/`F.conv2d` with a vmap rule that runs all members as one channels-last convolution.

    Outside vmap it is the plain convolution (with torch's own backward). Under vmap, `vmap` below
    runs plain torch operations on the unbatched tensors, so autograd records those and
    differentiates them itself: the backward of the grouped channels-last convolution.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, padding: tuple,
                dilation: tuple, groups: int) -> Tensor:
        conv = F.conv1d if weight.dim() == 3 else F.conv2d
        return conv(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bias_sizes = list(bias.shape) if bias is not None else None
        ctx.settings = (list(stride), list(padding), list(dilation), groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.settings
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, ctx.bias_sizes, stride, padding, dilation, False, [0] * len(stride), groups, mask)
        return grad_x, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple,
             padding: tuple, dilation: tuple, groups: int) -> tuple[Tensor, int]:
        members = info.batch_size
        x, weight = _members_first(x, in_dims[0], members), _members_first(weight, in_dims[1], members)
        bias = None if bias is None else _members_first(bias, in_dims[2], members)
        if x.dim() != weight.dim():  # each member's input has no batch dimension: torch's own rule
            conv = F.conv1d if weight.dim() == 4 else F.conv2d
            run = torch.vmap(lambda *t: conv(*t, stride, padding, dilation, groups), in_dims=(0, 0, 0 if bias is not None else None))
            return run(x, weight, bias), 0
        bias = None if bias is None else bias.flatten()
        one_d = weight.dim() == 4  # (K, out, in, k): a Conv1d, run as a Conv2d of height 1
        if one_d:
            x, weight = x.unsqueeze(-2), weight.unsqueeze(-2)
            stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
        batch = x.shape[1]
        # (K, B, C, H, W) -> (B, K*C, H, W): member k's channels are block k, its own group(s).
        x = x.transpose(0, 1).flatten(1, 2).contiguous(memory_format=torch.channels_last)
        weight = weight.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups * members)
        out = out.unflatten(1, (members, -1)).transpose(0, 1)  # (K, B, out, H', W')
        return (out.squeeze(-2) if one_d else out), 0


def _members_first(tensor: Tensor, dim: int | None, members: int) -> Tensor:
    """`tensor` with the member dimension first, broadcast when it has none (a shared input)."""
    if dim is None:
        return tensor.expand(members, *tensor.shape)
    return tensor.movedim(dim, 0)
