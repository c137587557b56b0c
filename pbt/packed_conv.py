"""Convolutions of a pack on the CPU, as channels-last grouped convolutions.

Under `vmap`, PyTorch runs a convolution whose weights have a member dimension as one grouped
convolution (K groups) in the contiguous NC(H)W layout, and oneDNN is slow at that layout: for
the MNIST-1D CNN's layers (batch 32, 25 channels, 16 members) forward and backward took about 3x
as long as the same grouped convolution in channels-last layout (`scripts/bench_packed.py`
measures what it does to a whole epoch). `vmap`'s own batching rule cannot be told to use
channels-last (it queries `is_contiguous`, which vmap does not support), so `fast_convolutions`
gives the pack's template convolutions a forward that, under vmap, takes the member dimension
off the tensors itself, puts it into the channels and the tensors into channels-last, and runs
one Conv2d (a Conv1d as a Conv2d of height 1: oneDNN has no channels-last 1-d layout).
Autograd records those plain operations and differentiates them itself.

It unwraps vmap's tensors with `torch._C._functorch`, the calls torch's own Python vmap rules
use, rather than through an `autograd.Function` with a `vmap` staticmethod: that route flattens
and rebuilds its arguments in Python on every call, about 0.3 ms a convolution, which cost a
pack of 8 MNIST-1D members a fifth of its epoch. Anything this path does not handle (no vmap,
nested transforms, an input without a batch dimension) goes to torch's own forward and rule.

The arithmetic is the same convolution; only the memory layout and the kernel oneDNN picks
change, so results agree with torch's own path to float rounding.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._C import _functorch

CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d)


def fast_convolutions(model: torch.nn.Module) -> int:
    """Give every plain `Conv1d`/`Conv2d` of `model` (zero padding, numeric padding) the
    channels-last grouped path under vmap. Returns how many were changed; subclasses, other
    padding modes and string padding keep torch's own forward."""
    changed = 0
    for module in model.modules():
        if type(module) not in CONVOLUTIONS:
            continue
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            continue
        module.forward = types.MethodType(_forward, module)
        changed += 1
    return changed


def _forward(self: torch.nn.Conv1d | torch.nn.Conv2d, x: Tensor) -> Tensor:
    unwrapped = _unwrap_members(x, self.weight, self.bias)
    if unwrapped is None:
        return type(self).forward(self, x)
    level, x, weight, bias = unwrapped
    # The operands are plain tensors now: keep vmap's batching out of the way, as torch's own
    # Python vmap rules (`torch.library.register_vmap`) do.
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchBatched)):
        out = _grouped_channels_last(x, weight, bias, tuple(self.stride), tuple(self.padding),
                                     tuple(self.dilation), self.groups)
    return _functorch._add_batch_dim(out, 0, level)


def _unwrap_members(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[int, Tensor, Tensor, Tensor | None] | None:
    """The innermost vmap's level and the plain tensors with the member dimension first (a shared
    input broadcast to every member), when the weight is batched by that vmap and every member's
    input has a batch dimension; else None."""
    if not _functorch.is_batchedtensor(weight):
        return None
    level = _functorch.maybe_get_level(weight)
    if level != _functorch.current_level():
        return None
    operands = [_functorch._unwrap_batched(t, level) for t in (x, weight)]
    operands.append((None, None) if bias is None else _functorch._unwrap_batched(bias, level))
    if any(t is not None and _functorch.is_functorch_wrapped_tensor(t) for t, _ in operands):
        return None  # nested transforms: torch's own rule knows them
    members = operands[1][0].shape[operands[1][1]]
    x, weight, bias = (None if t is None else _members_first(t, dim, members) for t, dim in operands)
    if x.dim() != weight.dim():  # each member's input has no batch dimension
        return None
    return level, x, weight, bias


def _grouped_channels_last(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, padding: tuple,
                           dilation: tuple, groups: int) -> Tensor:
    """Every member's convolution as one: `x` (K, B, C, ...), `weight` (K, out, C/groups, ...),
    `bias` (K, out); the output is (K, B, out, ...)."""
    members = x.shape[0]
    bias = None if bias is None else bias.flatten()
    one_d = weight.dim() == 4  # (K, out, in, k): a Conv1d, run as a Conv2d of height 1
    if one_d:
        x, weight = x.unsqueeze(-2), weight.unsqueeze(-2)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    # (K, B, C, H, W) -> (B, K*C, H, W): member k's channels are block k, its own group(s).
    x = x.transpose(0, 1).flatten(1, 2).contiguous(memory_format=torch.channels_last)
    weight = weight.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups * members)
    out = out.unflatten(1, (members, -1)).transpose(0, 1)  # (K, B, out, H', W')
    return out.squeeze(-2) if one_d else out


def _members_first(tensor: Tensor, dim: int | None, members: int) -> Tensor:
    """`tensor` with the member dimension first, broadcast when it has none (a shared input)."""
    if dim is None:
        return tensor.expand(members, *tensor.shape)
    return tensor.movedim(dim, 0)
