"""The plain-tensor path of packs' convolutions, pooling and batch norm on the CPU gives torch's own
results and gradients."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from pbt.engines.packed.layers import fast_layers

MEMBERS = 3


def _layers() -> list[tuple[torch.nn.Module, tuple[int, ...]]]:
    return [
        (torch.nn.Conv1d(4, 6, 5, stride=2, padding=1), (5, 4, 40)),
        (torch.nn.Conv1d(4, 6, 3, dilation=2, groups=2, bias=False), (5, 4, 20)),
        (torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), (5, 3, 12, 12)),
        (torch.nn.Conv2d(4, 4, 3, groups=4, padding=(1, 2)), (5, 4, 9, 7)),
    ]


def _stacked(layer: torch.nn.Module) -> tuple[dict, list[torch.nn.Module]]:
    torch.manual_seed(0)
    members = [copy.deepcopy(layer).double() for _ in range(MEMBERS)]
    for member in members:
        for p in member.parameters():
            torch.nn.init.normal_(p)
    params, _ = stack_module_state(members)
    return {name: p.detach().requires_grad_() for name, p in params.items()}, members


def _run(template: torch.nn.Module, params: dict, x: torch.Tensor, shared: bool) -> torch.Tensor:
    return vmap(lambda p, x_: functional_call(template, p, (x_,)), in_dims=(0, None if shared else 0))(params, x)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("index", range(4))
def test_under_vmap_the_fast_path_gives_torch_s_outputs_and_gradients(index: int, shared: bool) -> None:
    layer, shape = _layers()[index]
    _assert_same_as_torch(layer, shape, shared, changed=1)


def _assert_same_as_torch(layer: torch.nn.Module, shape: tuple[int, ...], shared: bool, changed: int) -> None:
    """`layer`'s outputs and weight gradients under vmap: with `changed` layers on the fast path as
    with torch's own rules, and no warning from the fast path."""
    template = copy.deepcopy(layer).double().to("meta")
    fast = copy.deepcopy(template)
    assert fast_layers(fast) == changed
    x = torch.randn(shape if shared else (MEMBERS, *shape), dtype=torch.double)
    results = []
    for model in (template, fast):
        params, _ = _stacked(layer)
        with warnings.catch_warnings():
            # torch's own rule warns of a per-member loop for adaptive pooling of channels-last input
            warnings.simplefilter("ignore" if model is template else "error")
            out = _run(model, params, x, shared)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.double).view_as(out)).sum().backward()
        results.append((out.detach(), {name: p.grad for name, p in params.items()}))
    (own, own_grads), (fast_out, fast_grads) = results
    assert fast_out.shape == own.shape
    torch.testing.assert_close(fast_out, own)
    for name in own_grads:
        torch.testing.assert_close(fast_grads[name], own_grads[name])


def test_outside_vmap_it_is_the_plain_convolution_with_its_gradient() -> None:
    for layer, shape in _layers():
        fast = copy.deepcopy(layer).double()
        fast_layers(fast)
        x = torch.randn(shape, dtype=torch.double, requires_grad=True)
        torch.testing.assert_close(fast(x), layer.double()(x))
        assert torch.autograd.gradcheck(lambda x_, *weights: fast(x_), (x, *fast.parameters()))


def test_an_unbatched_input_per_member_falls_back_to_torch_s_rule() -> None:
    layer = torch.nn.Conv1d(2, 3, 3, padding=1)
    fast = copy.deepcopy(layer).double().to("meta")
    fast_layers(fast)
    params, members = _stacked(layer)
    x = torch.randn(MEMBERS, 2, 10, dtype=torch.double)  # each member: (channels, length), no batch
    out = _run(fast, params, x, shared=False)
    for index, member in enumerate(members):
        torch.testing.assert_close(out[index], member(x[index]))


def test_only_plain_zero_padded_convolutions_and_pooling_without_indices_change() -> None:
    class Standardised(torch.nn.Conv1d):
        pass

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.MaxPool2d(2),
                                torch.nn.Conv1d(2, 2, 3, padding_mode="circular", padding=1),
                                torch.nn.Conv1d(2, 2, 3, padding="same"), Standardised(2, 2, 3),
                                torch.nn.Conv3d(1, 1, 1),
                                torch.nn.MaxPool2d(2, return_indices=True), torch.nn.AvgPool3d(2))
    assert fast_layers(model) == 2
    assert "forward" in vars(model[0]) and "forward" in vars(model[1])
    assert not any("forward" in vars(module) for module in model[2:])


POOLS = [
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(2), (5, 3, 9, 9)),
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AvgPool2d(3, stride=2, padding=1), (5, 3, 9, 9)),
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), (5, 3, 8, 8)),  # ResNet's head
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveMaxPool2d((2, 3)), (5, 3, 7, 7)),
    (torch.nn.Conv1d(2, 4, 3), torch.nn.MaxPool1d(3, stride=2), (5, 2, 20)),
    (torch.nn.Conv1d(2, 4, 3), torch.nn.AdaptiveAvgPool1d(4), (5, 2, 20)),
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(2), (3, 8, 8)),  # no batch per member: torch's rule
]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("index", range(len(POOLS)))
def test_pooling_under_vmap_gives_torch_s_outputs_and_gradients_without_warnings(index: int, shared: bool) -> None:
    conv, pool, shape = POOLS[index]
    _assert_same_as_torch(torch.nn.Sequential(conv, torch.nn.ReLU(), pool), shape, shared, changed=2)


def test_under_nested_transforms_torch_s_own_rule_runs() -> None:
    # Per-member gradients by `torch.func.grad` around the vmap: the weights the convolution sees
    # are wrapped twice, which the fast path leaves to torch; the results must still be torch's.
    layer, shape = _layers()[0]
    fast = copy.deepcopy(layer).double().to("meta")
    fast_layers(fast)
    params, _ = _stacked(layer)
    params = {name: p.detach() for name, p in params.items()}
    x = torch.randn(MEMBERS, *shape, dtype=torch.double)

    def loss(template: torch.nn.Module):
        return lambda p: _run(template, p, x, shared=False).square().sum()

    plain = copy.deepcopy(layer).double().to("meta")
    torch.testing.assert_close(torch.func.grad(loss(fast))(params), torch.func.grad(loss(plain))(params))


def test_the_fast_path_runs_under_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guard against the equality tests passing because every call fell back to torch's own rule.
    import pbt.engines.packed.layers as packed_layers

    calls = []
    plain = packed_layers._plain_tensors
    monkeypatch.setattr(packed_layers, "_plain_tensors", lambda: calls.append(1) or plain())
    conv, pool, shape = POOLS[0]
    layer = torch.nn.Sequential(conv, pool)
    fast = copy.deepcopy(layer).double().to("meta")
    fast_layers(fast)
    params, _ = _stacked(layer)
    _run(fast, params, torch.randn(MEMBERS, *shape, dtype=torch.double), shared=False)
    assert calls == [1, 1]  # the convolution and the pooling


BATCH_NORMS = [
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), (6, 3, 5, 5)),
    (torch.nn.Conv1d(2, 4, 3), torch.nn.BatchNorm1d(4), (6, 2, 9)),
    (torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4, affine=False), (6, 5)),
    (torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4, track_running_stats=False), (6, 3, 5, 5)),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("index", range(len(BATCH_NORMS)))
def test_batch_norm_under_vmap_gives_torch_s_outputs_gradients_and_running_statistics(
        index: int, training: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import pbt.engines.packed.layers as packed_layers

    first, norm, shape = BATCH_NORMS[index]
    layer = torch.nn.Sequential(first, norm).train(training)
    template = copy.deepcopy(layer).double().to("meta")
    fast = copy.deepcopy(template)
    changed = fast_layers(fast)
    assert changed == (2 if isinstance(first, torch.nn.Conv2d | torch.nn.Conv1d) else 1)
    calls = []
    plain = packed_layers._plain_tensors
    monkeypatch.setattr(packed_layers, "_plain_tensors", lambda: calls.append(1) or plain())
    x = torch.randn(MEMBERS, *shape, dtype=torch.double)
    results = []
    for model in (template, fast):
        params, members = _stacked(layer)
        buffers = {name: b.clone() for name, b in stack_module_state(members)[1].items()}
        torch.manual_seed(1)
        for name, buffer in buffers.items():  # members with running statistics of their own
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
        initial = {name: b.clone() for name, b in buffers.items()}
        out = vmap(lambda p, b, x_: functional_call(model, (p, b), (x_,)), in_dims=(0, 0, 0))(params, buffers, x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.double).view_as(out)).sum().backward()
        results.append((out.detach(), {name: p.grad for name, p in params.items()}, buffers))
    (own, own_grads, own_buffers), (fast_out, fast_grads, fast_buffers) = results
    torch.testing.assert_close(fast_out, own)
    for name in own_grads:
        torch.testing.assert_close(fast_grads[name], own_grads[name])
    for name in own_buffers:  # updated in training (num_batches_tracked counted), read in evaluation
        torch.testing.assert_close(fast_buffers[name], own_buffers[name])
    if norm.track_running_stats:
        assert torch.equal(fast_buffers["1.running_mean"], initial["1.running_mean"]) is not training
    assert len(calls) == changed  # the fast path ran: the equalities above are not torch against itself


def test_batch_norm_without_momentum_keeps_torch_s_forward() -> None:
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3))
    assert fast_layers(model) == 1 and "forward" not in vars(model[0])
