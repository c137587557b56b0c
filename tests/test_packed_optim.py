"""A PackedOptimizer steps every member of a pack as its own torch optimizer would step it alone."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pbt.engines.packed.optim import PACKABLE_OPTIMIZERS, PackedOptimizer, flat_parameters
from pbt.optim import make_optimizer, set_hyperparams

K, FEATURES, HIDDEN, CLASSES, BATCH = 4, 6, 16, 3, 8

# Each member's (lr, momentum, weight_decay): all different, member 0 without weight decay and
# member 1 with momentum 0 (beta1 0 for Adam), where the optimizer has momentum.
HYPERPARAMS = {
    "sgd": [(0.1, 0.9, 0.0), (0.05, 0.0, 1e-2), (0.2, 0.5, 1e-3), (0.02, 0.99, 5e-2)],
    "adam": [(1e-2, 0.9, 0.0), (3e-3, 0.0, 1e-2), (2e-2, 0.5, 1e-3), (1e-3, 0.95, 5e-2)],
    "adamw": [(1e-2, 0.9, 0.0), (3e-3, 0.0, 0.1), (2e-2, 0.5, 1e-2), (1e-3, 0.95, 0.5)],
    "rmsprop": [(1e-3, 0.9, 0.0), (3e-3, 0.0, 1e-2), (5e-4, 0.5, 1e-3), (2e-3, 0.95, 5e-2)],
    # No momentum: the values are ignored, by torch and by the pack alike.
    "adagrad": [(0.05, 0.9, 0.0), (0.1, 0.0, 1e-2), (0.02, 0.5, 1e-3), (0.2, 0.99, 5e-2)],
    "adadelta": [(1.0, 0.9, 0.0), (0.5, 0.0, 1e-2), (2.0, 0.5, 1e-3), (0.1, 0.99, 5e-2)],
}
# Nesterov needs momentum > 0 (torch refuses 0), so member 1 gets a small one instead.
NESTEROV_HYPERPARAMS = [(0.1, 0.9, 0.0), (0.05, 0.1, 1e-2), (0.2, 0.5, 1e-3), (0.02, 0.99, 5e-2)]

CASES = [(name, False) for name in PACKABLE_OPTIMIZERS] + [("sgd", True)]


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def _models(seed: int = 0) -> list[nn.Module]:
    return [_mlp(seed * K + member) for member in range(K)]


def _hyperparams(name: str, nesterov: bool = False) -> list[tuple[float, float, float]]:
    return NESTEROV_HYPERPARAMS if nesterov else HYPERPARAMS[name]


class Pack:
    """K members as stacked parameters, trained like `pbt.engines.packed.model.PackedTrainer`: one vmap of
    functional_call, the sum of the members' losses backpropagated, a PackedOptimizer step."""

    def __init__(self, name: str, models: list[nn.Module], hyperparams: list, nesterov: bool = False,
                 flat: bool = True) -> None:
        self.params, self.buffers = stack_module_state(models)
        if flat:  # as PackedModel holds them: views of one (K, P) tensor, stepped at once
            self.params = flat_parameters(self.params)
        self.template = copy.deepcopy(models[0]).to("meta")
        self.optimizer = PackedOptimizer(name, list(self.params.values()), len(models), nesterov=nesterov)
        for member, (lr, momentum, weight_decay) in enumerate(hyperparams):
            self.optimizer.set_hyperparams(member, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        logits = vmap(self._call)(self.params, self.buffers, x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step()

    def member(self, member: int) -> dict[str, torch.Tensor]:
        return {name: p[member].detach() for name, p in self.params.items()}

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        for p in self.params.values():
            p[target] = p[source]
        self.optimizer.copy_member(source, target)

    def member_state(self, member: int) -> dict:
        model = {name: p.clone() for name, p in self.member(member).items()}
        return {"model": model, "optimizer": self.optimizer.member_state(member)}

    @torch.no_grad()
    def load_member_state(self, member: int, state: dict) -> None:
        for name, p in self.params.items():
            p[member] = state["model"][name]
        self.optimizer.load_member_state(member, state["optimizer"])


class Separate:
    """The same K members as K models, each with its own `pbt.optim.make_optimizer` optimizer."""

    def __init__(self, name: str, models: list[nn.Module], hyperparams: list, nesterov: bool = False) -> None:
        self.models = [copy.deepcopy(model) for model in models]
        self.optimizers = [
            make_optimizer(name, model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
            for model, (lr, momentum, wd) in zip(self.models, hyperparams)
        ]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for member, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            optimizer.zero_grad()
            F.cross_entropy(model(x[member]), y[member]).backward()
            optimizer.step()

    def member(self, member: int) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.models[member].named_parameters()}


def _pair(name: str, nesterov: bool = False, flat: bool = True) -> tuple[Pack, Separate]:
    models, hyperparams = _models(), _hyperparams(name, nesterov)
    return Pack(name, models, hyperparams, nesterov, flat), Separate(name, models, hyperparams, nesterov)


def _batches(steps: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A different random batch for every member at every step."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.randn(K, BATCH, FEATURES, generator=gen), torch.randint(0, CLASSES, (K, BATCH), generator=gen)


def _assert_members_match(pack: Pack, separate: Separate) -> None:
    # Default float32 tolerances (rtol 1.3e-6, atol 1e-5): the pack is not bit-identical, since
    # torch fuses `add(x, alpha=a)` into one multiply-add where the pack multiplies by a per-member
    # tensor, and the vmapped forward/backward rounds slightly differently from K separate ones.
    for member in range(K):
        torch.testing.assert_close(pack.member(member), separate.member(member), msg=lambda m: f"member {member}: {m}")


def _assert_same_member(a: Pack, a_member: int, b: Pack, b_member: int) -> None:
    for name, value in a.member(a_member).items():
        assert torch.equal(value, b.member(b_member)[name]), name


def _with_member_batch(x: torch.Tensor, y: torch.Tensor, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = x.clone(), y.clone()
    x[target], y[target] = x[source], y[source]
    return x, y


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize(("name", "nesterov"), CASES)
def test_pack_trains_each_member_like_its_own_torch_optimizer(name, nesterov, flat):
    pack, separate = _pair(name, nesterov, flat)
    for x, y in _batches(20):
        pack.train_step(x, y)
        separate.train_step(x, y)
    _assert_members_match(pack, separate)
    # Guard against a vacuous pass: the members moved, and each differently.
    assert not torch.allclose(pack.member(0)["0.weight"], _models()[0][0].weight)


@pytest.mark.parametrize("name", PACKABLE_OPTIMIZERS)
def test_changed_hyperparams_act_like_a_changed_param_group(name):
    pack, separate = _pair(name)
    lr = _hyperparams(name)[2][0]
    new = {"lr": 1.5 * lr, "momentum": 0.8, "weight_decay": 0.02}
    for step, (x, y) in enumerate(_batches(20)):
        if step == 8:
            pack.optimizer.set_hyperparams(2, **new)
            set_hyperparams(separate.optimizers[2], **new)
        pack.train_step(x, y)
        separate.train_step(x, y)
    _assert_members_match(pack, separate)
    expected = {**new, "momentum": new["momentum"] if name in ("sgd", "adam", "adamw", "rmsprop") else 0.0}
    assert pack.optimizer.get_hyperparams(2) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_momentum_switched_off_and_on_again_matches_torch(name):
    """torch keeps no momentum buffer for momentum 0 and leaves an existing one untouched while
    momentum is 0; the pack keeps a buffer for every member and must act the same."""
    pack, separate = _pair(name)
    # Member 0: momentum on, off, on again. Member 1: momentum 0 from the start, then on (not for
    # RMSprop: torch's RMSprop allocates the buffer at its first step only if momentum > 0 then,
    # so switching it on later fails inside torch itself).
    switches = {5: {0: 0.0}, 10: {0: 0.7}}
    if name != "rmsprop":
        switches[5][1] = 0.6
    for step, (x, y) in enumerate(_batches(15)):
        for member, momentum in switches.get(step, {}).items():
            pack.optimizer.set_hyperparams(member, momentum=momentum)
            set_hyperparams(separate.optimizers[member], momentum=momentum)
        pack.train_step(x, y)
        separate.train_step(x, y)
    _assert_members_match(pack, separate)


def test_nesterov_matches_with_momentum_changed_mid_run():
    pack, separate = _pair("sgd", nesterov=True)
    for step, (x, y) in enumerate(_batches(12)):
        if step == 6:
            pack.optimizer.set_hyperparams(1, momentum=0.95, lr=0.03)
            set_hyperparams(separate.optimizers[1], momentum=0.95, lr=0.03)
        pack.train_step(x, y)
        separate.train_step(x, y)
    _assert_members_match(pack, separate)


@pytest.mark.parametrize("name", PACKABLE_OPTIMIZERS)
def test_copied_member_continues_exactly_like_its_source(name):
    pack = Pack(name, _models(), _hyperparams(name))
    batches = _batches(10)
    for _ in range(3):
        pack.train_step(*next(batches))
    # Restart member 1's optimizer state so its step count (Adam's bias correction) differs.
    pack.optimizer.load_member_state(1, Pack(name, _models(1), _hyperparams(name)).optimizer.member_state(1))
    for _ in range(2):
        pack.train_step(*next(batches))
    assert pack.optimizer.steps.tolist() == [5.0, 2.0, 5.0, 5.0]

    target_hyperparams = pack.optimizer.get_hyperparams(2)
    pack.copy_member(1, 2)
    assert pack.optimizer.get_hyperparams(2) == target_hyperparams, "copy_member must not copy hyperparameters"
    copied, source = pack.optimizer.member_state(2), pack.optimizer.member_state(1)
    assert copied["step"].item() == 2.0
    torch.testing.assert_close(copied["state"], source["state"], rtol=0, atol=0)

    pack.optimizer.set_hyperparams(2, **pack.optimizer.get_hyperparams(1))
    for x, y in batches:
        pack.train_step(*_with_member_batch(x, y, source=1, target=2))
    _assert_same_member(pack, 1, pack, 2)
    assert not torch.equal(pack.member(1)["0.weight"], pack.member(0)["0.weight"])


@pytest.mark.parametrize("name", PACKABLE_OPTIMIZERS)
def test_member_moved_to_another_pack_continues_exactly(name):
    a = Pack(name, _models(0), _hyperparams(name))
    b = Pack(name, _models(1), _hyperparams(name)[::-1])
    for (xa, ya), (xb, yb) in zip(_batches(4, seed=0), _batches(2, seed=1)):
        a.train_step(xa, ya)
        b.train_step(xb, yb)
    # Through a file, as a checkpoint would be: plain tensors, loadable without pickled classes.
    buffer = io.BytesIO()
    torch.save(a.member_state(1), buffer)
    buffer.seek(0)
    b.load_member_state(3, torch.load(buffer, weights_only=True))
    assert b.optimizer.get_hyperparams(3) == a.optimizer.get_hyperparams(1)

    for (xa, ya), (xb, yb) in zip(_batches(5, seed=2), _batches(5, seed=3)):
        xb, yb = xb.clone(), yb.clone()
        xb[3], yb[3] = xa[1], ya[1]
        a.train_step(xa, ya)
        b.train_step(xb, yb)
    _assert_same_member(a, 1, b, 3)


@pytest.mark.parametrize(("name", "nesterov"), CASES)
def test_state_dict_round_trip_through_weights_only_load_continues_exactly(name, nesterov):
    original = Pack(name, _models(0), _hyperparams(name, nesterov), nesterov)
    for x, y in _batches(4):
        original.train_step(x, y)
    buffer = io.BytesIO()
    torch.save({"params": original.params, "optimizer": original.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    restored = Pack(name, _models(1), _hyperparams(name, nesterov)[::-1], nesterov)
    with torch.no_grad():
        for key, p in restored.params.items():
            p.copy_(saved["params"][key])
    restored.optimizer.load_state_dict(saved["optimizer"])
    for member in range(K):
        assert restored.optimizer.get_hyperparams(member) == original.optimizer.get_hyperparams(member)

    for x, y in _batches(5, seed=1):
        original.train_step(x, y)
        restored.train_step(x, y)
    for member in range(K):
        _assert_same_member(original, member, restored, member)


@pytest.mark.parametrize(("name", "nesterov"), CASES)
def test_flat_parameters_step_exactly_as_separate_tensors(name, nesterov):
    models, hyperparams = _models(), _hyperparams(name, nesterov)
    flat, tensors = (Pack(name, models, hyperparams, nesterov, flat=layout) for layout in (True, False))
    assert flat.optimizer.flat is not None and tensors.optimizer.flat is None
    for x, y in _batches(10):
        flat.train_step(x, y)
        tensors.train_step(x, y)
    for member in range(K):
        _assert_same_member(flat, member, tensors, member)
        states = (pack.optimizer.member_state(member)["state"] for pack in (flat, tensors))
        for own, other in zip(*states):
            for key in own:
                assert torch.equal(own[key], other[key]), key


def test_flat_parameters_are_refused_when_no_one_tensor_holds_them():
    assert flat_parameters({"a": torch.zeros(K, 2), "b": torch.zeros(K, 3, dtype=torch.float64)}) is None
    # Parameters that are not views of one tensor in order step one by one.
    base = torch.zeros(K, 5)
    reordered = [base[:, 2:5].requires_grad_(), base[:, 0:2].requires_grad_()]
    assert PackedOptimizer("sgd", reordered, K).flat is None


@pytest.mark.parametrize("flat", [True, False])
def test_params_without_grad_are_skipped(flat):
    pack = Pack("adam", _models(), _hyperparams("adam"), flat=flat)
    x, y = next(_batches(1))
    pack.train_step(x, y)
    frozen = pack.params["2.bias"]
    before, state_before = frozen.detach().clone(), {k: v.clone() for k, v in pack.optimizer.state[3].items()}
    logits = vmap(pack._call)(pack.params, pack.buffers, x)
    pack.optimizer.zero_grad()
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    frozen.grad = None
    pack.optimizer.step()
    assert torch.equal(frozen, before)
    torch.testing.assert_close(pack.optimizer.state[3], state_before, rtol=0, atol=0)
    # A step with no gradients at all is no step: the step count stays.
    pack.optimizer.zero_grad()
    pack.optimizer.step()
    assert pack.optimizer.steps.tolist() == [2.0] * K


def test_hyperparams_read_back_as_written():
    params = [torch.zeros(K, 3, requires_grad=True)]
    optimizer = PackedOptimizer("adam", params, K, lr=0.05, momentum=0.85, weight_decay=1e-4)
    optimizer.set_hyperparams(2, lr=3e-4)
    assert optimizer.get_hyperparams(2) == {"lr": 3e-4, "momentum": 0.85, "weight_decay": 1e-4}
    assert optimizer.lr.dtype == torch.float32 and optimizer.lr.shape == (K,)
    # Adagrad has no momentum: ignored, read back as 0 (as pbt.optim.get_hyperparams reads it).
    adagrad = PackedOptimizer("adagrad", params, K, momentum=0.9)
    assert adagrad.get_hyperparams(0)["momentum"] == 0.0


@pytest.mark.parametrize("name", ["lbfgs", "nadam", "SGD"])
def test_unknown_or_unpackable_optimizer_is_refused(name):
    with pytest.raises(ValueError, match="packable optimizers: sgd, adam, adamw"):
        PackedOptimizer(name, [torch.zeros(K, 2, requires_grad=True)], K)


def test_bad_arguments_are_refused():
    params = [torch.zeros(K, 2, requires_grad=True)]
    with pytest.raises(ValueError, match="leading member dimension"):
        PackedOptimizer("sgd", [torch.zeros(K + 1, 2)], K)
    with pytest.raises(ValueError, match="Nesterov"):
        PackedOptimizer("sgd", params, K, nesterov=True, momentum=0.0)
    optimizer = PackedOptimizer("sgd", params, K, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        optimizer.set_hyperparams(1, momentum=0.0)
    with pytest.raises(IndexError):
        optimizer.set_hyperparams(K, lr=0.1)
    with pytest.raises(ValueError, match="optimizer 'sgd'"):
        PackedOptimizer("adam", params, K).load_state_dict(optimizer.state_dict())


@pytest.mark.parametrize(("name", "nesterov"), CASES)
def test_step_reads_nothing_on_the_host(name, nesterov):
    # Meta tensors hold no data: any host read (`.item()`, `if tensor`) in step() would raise, so
    # a step that runs here never syncs a GPU either.
    params = [torch.zeros(K, *shape, device="meta", requires_grad=True) for shape in ((3, 2), (5,))]
    optimizer = PackedOptimizer(name, params, K, nesterov=nesterov, momentum=0.9)
    optimizer.set_hyperparams(1, momentum=0.5, lr=0.1, weight_decay=0.01)
    for _ in range(2):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    optimizer.copy_member(0, 2)
