"""Convolutions, pooling and batch norm of a pack on the CPU, run on plain tensors with the members in the channels.

Under `vmap`, PyTorch runs a convolution whose weights have a member dimension as one grouped
convolution (K groups) in the contiguous NC(H)W layout, and oneDNN is slow at that layout: for
the MNIST-1D CNN's layers (batch 32, 25 channels, 16 members) forward and backward took about 3x
as long as the same grouped convolution in channels-last layout (`scripts/bench_packed.py`
measures what it does to a whole epoch). `vmap`'s own batching rule cannot be told to use
channels-last (it queries `is_contiguous`, which vmap does not support), so `fast_layers` gives
the pack's template convolutions a forward that, under vmap, takes the member dimension off the
tensors itself, puts it into the channels and the tensors into channels-last, and runs one Conv2d
(a Conv1d as a Conv2d of height 1: oneDNN has no channels-last 1-d layout). Autograd records
those plain operations and differentiates them itself.

Pooling and batch norm layers get the same treatment: both work channel by channel, so the
members' channels side by side (B, K*C, ...) pool and normalise as each member's alone would (batch
norm with the members' weights and running statistics as flat (K*C,) views), and that view is free
in the layout the convolutions leave. Under vmap's own rules, max pooling of that layout cost the
seed CNN's pack most of its step, adaptive average pooling fell back to a per-member loop with a
warning, and batch norm ran as a dozen operations (`scripts/bench_pack_layers.py` measures each).

It unwraps vmap's tensors with `torch._C._functorch`, the calls torch's own Python vmap rules
use, rather than through an `autograd.Function` with a `vmap` staticmethod: that route flattens
and rebuilds its arguments in Python on every call, about 0.3 ms a convolution, which cost a
pack of 8 MNIST-1D members a fifth of its epoch. Anything this path does not handle (no vmap,
nested transforms, an input without a batch dimension) goes to torch's own forward and rule.

The arithmetic is the same; only the memory layout and the kernel oneDNN picks change, so results
agree with torch's own path to float rounding.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C import _functorch

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d)
# Batch norms by the dimensions they accept, batch dimension included: (N, C), (N, C, L); (N, C, H, W).
BATCH_NORMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,)}
# Pooling layers by the number of spatial dimensions of their input.
POOLING = {nn.MaxPool1d: 1, nn.AvgPool1d: 1, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveMaxPool1d: 1,
           nn.MaxPool2d: 2, nn.AvgPool2d: 2, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveMaxPool2d: 2}


def fast_layers(model: nn.Module) -> int:
    """Give every plain convolution (`Conv1d`/`Conv2d`, zero and numeric padding), pooling layer
    (`POOLING`, without `return_indices`) and batch norm (`BatchNorm1d`/`2d` with a `momentum`) of
    `model` the plain-tensor path under vmap. Returns how many were changed; subclasses and other
    settings keep torch's own forward."""
    changed = 0
    for module in model.modules():
        forward = _fast_forward(module)
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            changed += 1
    return changed


def _fast_forward(module: nn.Module) -> Callable | None:
    if type(module) in CONVOLUTIONS and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return _convolution
    if type(module) in POOLING and not getattr(module, "return_indices", False):
        return _pooling
    if type(module) in BATCH_NORMS and module.momentum is not None:  # None: a cumulative average per member
        return _batch_norm
    return None


def _convolution(self: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    level = _level(self.weight)
    operands = None if level is None else _unwrap((x, self.weight, self.bias), level)
    if operands is None:
        return type(self).forward(self, x)
    members = operands[1][0].shape[operands[1][1]]
    inputs, weight, bias = (None if t is None else _members_first(t, dim, members) for t, dim in operands)
    if inputs.dim() != weight.dim():  # each member's input has no batch dimension
        return type(self).forward(self, x)
    with _plain_tensors():
        out = _grouped_channels_last(inputs, weight, bias, tuple(self.stride), tuple(self.padding),
                                     tuple(self.dilation), self.groups)
    return _functorch._add_batch_dim(out, 0, level)


def _pooling(self: nn.Module, x: Tensor) -> Tensor:
    level = _level(x)
    operands = None if level is None else _unwrap((x,), level)
    if operands is None or operands[0][0].dim() != POOLING[type(self)] + 3:  # (K, B, C, spatial...)
        return type(self).forward(self, x)
    inputs = operands[0][0].movedim(operands[0][1], 0)
    members = inputs.shape[0]
    with _plain_tensors():
        # (K, B, C, ...) -> (B, K*C, ...): a view in the layout the fast convolutions leave.
        out = type(self).forward(self, inputs.transpose(0, 1).flatten(1, 2))
    return _functorch._add_batch_dim(out.unflatten(1, (members, -1)).transpose(0, 1), 0, level)


def _batch_norm(self: nn.BatchNorm1d | nn.BatchNorm2d, x: Tensor) -> Tensor:
    level = _level(x)
    tensors = (x, self.weight, self.bias, self.running_mean, self.running_var)
    operands = None if level is None else _unwrap(tensors, level)
    if (operands is None or operands[0][0].dim() - 1 not in BATCH_NORMS[type(self)]
            or any(t is not None and dim is None for t, dim in operands)):
        return type(self).forward(self, x)  # an input torch's forward refuses, or a tensor shared by all members
    weight, bias, mean, var = (None if t is None else t.movedim(dim, 0) for t, dim in operands[1:])
    if any(t is not None and not t.is_contiguous() for t in (mean, var)):
        return type(self).forward(self, x)
    # (K*C,) each: the running statistics as views, since batch_norm updates them in place and
    # they must be the pack's own buffers; the weights as they come (stacked or flat parameters).
    weight, bias = (None if t is None else t.reshape(-1) for t in (weight, bias))
    mean, var = (None if t is None else t.view(-1) for t in (mean, var))
    if self.training and self.track_running_stats and self.num_batches_tracked is not None:
        self.num_batches_tracked.add_(1)  # as torch's forward does (under vmap: every member's count)
    if self.training and not self.track_running_stats:
        mean = var = None  # batch statistics only, as torch's forward
    inputs = operands[0][0].movedim(operands[0][1], 0)
    members = inputs.shape[0]
    with _plain_tensors():
        out = F.batch_norm(inputs.transpose(0, 1).flatten(1, 2), mean, var, weight, bias,
                           self.training or (mean is None and var is None), self.momentum, self.eps)
    return _functorch._add_batch_dim(out.unflatten(1, (members, -1)).transpose(0, 1), 0, level)


def _level(tensor: Tensor) -> int | None:
    """The innermost vmap's level when `tensor` is batched by it, else None."""
    if not _functorch.is_batchedtensor(tensor):
        return None
    level = _functorch.maybe_get_level(tensor)
    return level if level == _functorch.current_level() else None


def _unwrap(tensors: tuple[Tensor | None, ...], level: int) -> list[tuple[Tensor | None, int | None]] | None:
    """Each tensor without vmap's wrapper at `level`, with its member dimension (None where it has
    none); None when some tensor is wrapped again underneath (nested transforms: torch's own rule
    knows them)."""
    operands = [(None, None) if t is None else _functorch._unwrap_batched(t, level) for t in tensors]
    if any(t is not None and _functorch.is_functorch_wrapped_tensor(t) for t, _ in operands):
        return None
    return operands


@contextlib.contextmanager
def _plain_tensors() -> Iterator[None]:
    # The operands are plain tensors now: keep vmap's batching out of the way, as torch's own
    # Python vmap rules (`torch.library.register_vmap`) do.
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchBatched)):
        yield


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
