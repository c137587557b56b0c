"""Hyperparameters written into param_groups must act exactly like constructor arguments."""

from __future__ import annotations

import pytest
import torch

from pbt.optim import get_hyperparams, make_optimizer, set_hyperparams

OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"]
HAS_MOMENTUM = {"sgd", "adam", "adamw", "rmsprop"}


def _train(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=gen).requires_grad_(), torch.randn(3, generator=gen).requires_grad_()]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_written_hyperparams_train_like_constructor_arguments(name):
    hp = {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.01}
    written, built = _params(), _params()
    opt_written = make_optimizer(name, written, lr=1.0, momentum=0.95, weight_decay=0.0)
    set_hyperparams(opt_written, **hp)
    opt_built = make_optimizer(name, built, **hp)
    _train(opt_written, written)
    _train(opt_built, built)
    for a, b in zip(written, built):
        torch.testing.assert_close(a, b)
    # Adagrad and Adadelta have no momentum; it is ignored and reads back as 0.
    expected = {**hp, "momentum": hp["momentum"] if name in HAS_MOMENTUM else 0.0}
    assert get_hyperparams(opt_written) == pytest.approx(expected)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_writing_hyperparams_keeps_optimizer_state(name):
    params = _params()
    optimizer = make_optimizer(name, params, lr=0.01)
    _train(optimizer, params, steps=3)
    before = {k: v.clone() for k, v in optimizer.state[params[0]].items() if isinstance(v, torch.Tensor)}
    set_hyperparams(optimizer, lr=0.02, momentum=0.8, weight_decay=1e-3)
    after = optimizer.state[params[0]]
    assert before, "the optimizer should have state after three steps"
    for key, value in before.items():
        torch.testing.assert_close(after[key], value)


def test_momentum_maps_to_adam_beta1_and_keeps_beta2():
    optimizer = make_optimizer("adam", _params(), momentum=0.9)
    set_hyperparams(optimizer, momentum=0.85)
    assert optimizer.param_groups[0]["betas"] == (0.85, 0.999)


def test_tensor_learning_rate_is_filled_in_place():
    params = _params()
    optimizer = torch.optim.Adam(params, lr=torch.tensor(0.01))
    lr_tensor = optimizer.param_groups[0]["lr"]
    set_hyperparams(optimizer, lr=0.003)
    assert optimizer.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.003)


def test_none_leaves_a_value_alone_and_unknown_names_are_refused():
    optimizer = make_optimizer("sgd", _params(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    set_hyperparams(optimizer, lr=0.2, momentum=None)
    assert get_hyperparams(optimizer) == pytest.approx({"lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4})
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        set_hyperparams(optimizer, beta2=0.9)


def test_an_optimizer_without_weight_decay_warns_once_and_trains_on(caplog):
    params = _params()
    optimizer = torch.optim.Rprop(params, lr=0.01)
    for _ in range(2):
        set_hyperparams(optimizer, lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert optimizer.param_groups[0]["lr"] == 0.02 and "weight_decay" not in optimizer.param_groups[0]
    assert get_hyperparams(optimizer) == {"lr": 0.02, "momentum": 0.0, "weight_decay": 0.0}
    warnings = [r.getMessage() for r in caplog.records if "has no weight_decay" in r.getMessage()]
    assert warnings == ["Rprop has no weight_decay: the weight_decay pbt searches has no effect on it"]
