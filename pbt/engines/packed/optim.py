"""Optimizers with per-member hyperparameters over stacked parameters (one pack of K members).

A pack trains K members of one architecture as stacked tensors: every parameter has a leading
member dimension K (`torch.func.stack_module_state`), and one `vmap` computes every member's
gradient. Stock `torch.optim` holds one learning rate, momentum and weight decay per param group,
but in PBT each member has its own, changed independently by explore. `PackedOptimizer` keeps
them as (K,) tensors and broadcasts them over each parameter's trailing dimensions, so one step
updates all members with whole-tensor operations: no Python loop over members, no host sync.

The update rules mirror torch's single-tensor (`foreach=False`) code paths of SGD, Adam, AdamW,
RMSprop, Adagrad and Adadelta with the settings `pbt.optim.make_optimizer` uses, so a member
trains as it would alone with `make_optimizer(...)` up to float rounding (torch fuses some
multiply-adds that have no per-element-coefficient equivalent here). Hyperparameters are
float32 (K,) tensors; the coefficients derived from them (bias corrections, step sizes) are
computed in float64 where the device has it, as torch computes them in Python floats.

Where the layout differs from torch, the arithmetic does not:
- State is allocated up front as zeros, which reproduces torch's lazy first-step initialisation
  (SGD's `buf = d_p.clone()` equals `0 * momentum + d_p`).
- Every member has a momentum buffer. torch's SGD and RMSprop keep none while momentum is 0 and
  leave an existing one untouched; a per-member mask does the same here, so a member whose
  momentum explore turns off and on again trains as it would alone.
- The step count is one (K,) tensor per pack, not one per parameter: the two differ only for a
  parameter that has a gradient on some steps and none on others.
- When the parameters are views tiling one (K, P) tensor (`flat_parameters`), so is the state,
  and a step whose every parameter has a gradient updates all of them at once: a handful of
  operations on (K, P) tensors instead of as many per parameter. The per-element arithmetic is
  the same, so the results are too; a step with a missing gradient goes parameter by parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pbt.optim import HAS_MOMENTUM, HYPERPARAMS

PACKABLE_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")

# Constants of `pbt.optim.make_optimizer`'s optimizers (torch's defaults there).
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8
ADAGRAD_EPS = 1e-10
ADADELTA_RHO, ADADELTA_EPS = 0.9, 1e-6

# Per-parameter state each optimizer keeps, named as torch names it.
STATE_KEYS = {
    "sgd": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
    "rmsprop": ("square_avg", "momentum_buffer"),
    "adagrad": ("sum",),
    "adadelta": ("square_avg", "acc_delta"),
}


class PackedOptimizer:
    """Per-member lr, momentum and weight decay over stacked parameters (leading dim K = members)."""

    lr: Tensor  # (K,) float32, on the params' device
    momentum: Tensor  # (K,): `momentum` for SGD/RMSprop, beta1 for Adam/AdamW, 0 for the others
    weight_decay: Tensor  # (K,)
    steps: Tensor  # (K,) float32: steps taken by each member's state (Adam's bias correction)
    state: list[dict[str, Tensor]]  # per parameter, each tensor shaped like the parameter
    flat: Tensor | None  # the (K, P) tensor the parameters are views of, if they tile one
    flat_state: dict[str, Tensor]  # with `flat`: each state key as one (K, P) tensor, `state` its views

    def __init__(
        self,
        name: str,
        params: Iterable[Tensor],
        members: int,
        *,
        nesterov: bool = False,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        if name not in PACKABLE_OPTIMIZERS:
            packable = ", ".join(PACKABLE_OPTIMIZERS)
            raise ValueError(f"optimizer {name!r} cannot be packed; packable optimizers: {packable}")
        self.name, self.members, self.nesterov = name, members, bool(nesterov)
        self.params = list(params)
        _check_params(self.params, members)
        # float32 whatever the default dtype: the precision torch's kernels use for a float32
        # parameter's scalars, and a dtype every device has.
        zeros = dict(device=self.params[0].device, dtype=torch.float32)
        self.lr = torch.zeros(members, **zeros)
        self.momentum = torch.zeros(members, **zeros)
        self.weight_decay = torch.zeros(members, **zeros)
        self.steps = torch.zeros(members, **zeros)
        # Zeros reproduce torch's lazy first-step initialisation exactly: SGD's `buf = d_p.clone()`
        # equals `0 * momentum + d_p`, and the other optimizers start from zeros themselves.
        self.flat = _tiled_base(self.params)
        if self.flat is None:
            self.flat_state = {}
            self.state = [{key: torch.zeros_like(p) for key in STATE_KEYS[name]} for p in self.params]
        else:
            self.flat_state = {key: torch.zeros_like(self.flat) for key in STATE_KEYS[name]}
            self.state = [{key: _view_like(flat, p, self.flat) for key, flat in self.flat_state.items()}
                          for p in self.params]
        for member in range(members):
            self.set_hyperparams(member, lr=lr, momentum=momentum, weight_decay=weight_decay)

    # Hyperparameters ---------------------------------------------------------------------------

    def set_hyperparams(
        self, member: int, lr: float | None = None, momentum: float | None = None, weight_decay: float | None = None
    ) -> None:
        """Write one member's hyperparameters (`None` keeps a value), as `pbt.optim.set_hyperparams`
        writes a param group: momentum is beta1 for Adam/AdamW and ignored by Adagrad/Adadelta."""
        self._check_member(member)
        if momentum is not None and self.name == "sgd" and self.nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0, but got 0")
        # fill_ on a view: a device-side write, no host sync.
        if lr is not None:
            self.lr[member].fill_(float(lr))
        if momentum is not None and self.name in HAS_MOMENTUM:
            self.momentum[member].fill_(float(momentum))
        if weight_decay is not None:
            self.weight_decay[member].fill_(float(weight_decay))

    def get_hyperparams(self, member: int) -> dict[str, float]:
        """One member's hyperparameters (a host sync). Values are stored as float32 and read back as
        their shortest decimal form, so what `set_hyperparams` wrote (0.05) reads back as 0.05
        rather than 0.05000000074505806."""
        self._check_member(member)
        return {name: _shortest(getattr(self, name)[member]) for name in HYPERPARAMS}

    # Stepping ----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """One update of every member; parameters whose `grad` is None are skipped."""
        with_grad = [(p, p.grad, state) for p, state in zip(self.params, self.state) if p.grad is not None]
        if not with_grad:
            return
        self.steps += 1
        coefs = _Coefficients(self._coefficients())
        update = _UPDATES[self.name]
        if self.flat is not None and len(with_grad) == len(self.params):
            grad = torch.cat([g.reshape(self.members, -1) for _, g, _ in with_grad], dim=1)
            update(self.flat, grad, self.flat_state, coefs, self.nesterov)
            return
        for p, grad, state in with_grad:
            update(p, grad, state, coefs, self.nesterov)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _coefficients(self) -> dict[str, Tensor]:
        # Per-member scalars torch computes in Python floats (float64), here (K,) tensors in
        # float64 where the device has it; cast to the parameters' precision when used.
        dtype = torch.float32 if self.lr.device.type == "mps" else torch.float64
        lr, momentum, wd = (t.to(dtype) for t in (self.lr, self.momentum, self.weight_decay))
        coefs = {"neg_lr": -lr, "weight_decay": wd, "momentum": momentum}
        if self.name in ("sgd", "rmsprop"):
            active = momentum != 0
            coefs["momentum_active"] = active
            coefs["buffer_decay"] = torch.where(active, momentum, torch.ones_like(momentum))
            coefs["buffer_gain"] = active.to(dtype)
        if self.name in ("adam", "adamw"):
            steps = self.steps.to(dtype)
            coefs["one_minus_beta1"] = 1 - momentum
            coefs["neg_step_size"] = -lr / (1 - momentum**steps)
            coefs["bias_correction2_sqrt"] = (1 - torch.pow(ADAM_BETA2, steps)) ** 0.5
            coefs["decoupled_decay"] = 1 - lr * wd
        return coefs

    # Exploit, checkpoints ----------------------------------------------------------------------

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        """Member `target` takes `source`'s optimizer state (buffers, moments, step count), not its
        hyperparameters: an exploit inside the pack, which explore follows."""
        self._check_member(source)
        self._check_member(target)
        for tensor in self._state_tensors():
            tensor[target] = tensor[source]

    def member_state(self, member: int) -> dict[str, Any]:
        """One member's optimizer state and hyperparameters as plain tensors (copies, on the pack's
        device): a checkpoint, or a member moving to another pack."""
        self._check_member(member)
        return {
            "optimizer": self.name,
            "hyperparams": {name: getattr(self, name)[member].clone() for name in HYPERPARAMS},
            "step": self.steps[member].clone(),
            "state": [{key: tensor[member].clone() for key, tensor in state.items()} for state in self.state],
        }

    @torch.no_grad()
    def load_member_state(self, member: int, state: dict[str, Any]) -> None:
        """Put a `member_state` (from this pack or another with the same architecture) into slot
        `member`, hyperparameters included."""
        self._check_member(member)
        self._check_state(state, member_shapes=True)
        # Through `set_hyperparams`, which checks them against this pack (Nesterov needs momentum).
        self.set_hyperparams(member, **{name: float(state["hyperparams"][name]) for name in HYPERPARAMS})
        self.steps[member] = state["step"]
        for own, saved in zip(self.state, state["state"]):
            for key, tensor in own.items():
                tensor[member] = saved[key]

    def state_dict(self) -> dict[str, Any]:
        """The whole pack's optimizer: tensors, strings and numbers only, so a `weights_only=True`
        load reads it. The tensors are the live ones, as in `torch.optim`'s `state_dict`: save or
        copy them before stepping again."""
        return {
            "optimizer": self.name,
            "members": self.members,
            "nesterov": self.nesterov,
            "hyperparams": {name: getattr(self, name) for name in HYPERPARAMS},
            "step": self.steps,
            "state": [dict(state) for state in self.state],
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a `state_dict` of a pack of the same optimizer, size and architecture, copying into
        this pack's tensors (and onto its device)."""
        self._check_state(state, member_shapes=False)
        if state["members"] != self.members or state["nesterov"] != self.nesterov:
            raise ValueError(
                f"state is for {state['members']} members with nesterov={state['nesterov']}, "
                f"this pack has {self.members} with nesterov={self.nesterov}"
            )
        for name in HYPERPARAMS:
            getattr(self, name).copy_(state["hyperparams"][name])
        self.steps.copy_(state["step"])
        for own, saved in zip(self.state, state["state"]):
            for key, tensor in own.items():
                tensor.copy_(saved[key])

    # Checks ------------------------------------------------------------------------------------

    def _state_tensors(self) -> list[Tensor]:
        tensors = [self.steps]
        for state in self.state:
            tensors.extend(state.values())
        return tensors

    def _check_member(self, member: int) -> None:
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} out of range for a pack of {self.members}")

    def _check_state(self, state: dict[str, Any], member_shapes: bool) -> None:
        if state.get("optimizer") != self.name:
            raise ValueError(f"state is for optimizer {state.get('optimizer')!r}, this pack uses {self.name!r}")
        saved = state["state"]
        if len(saved) != len(self.params):
            raise ValueError(f"state has {len(saved)} parameters, this pack has {len(self.params)}")
        for index, (p, entry) in enumerate(zip(self.params, saved)):
            shape = p.shape[1:] if member_shapes else p.shape
            for key in STATE_KEYS[self.name]:
                if key not in entry or entry[key].shape != shape:
                    found = tuple(entry[key].shape) if key in entry else "nothing"
                    raise ValueError(f"parameter {index}: state {key!r} should be {tuple(shape)}, found {found}")


def flat_parameters(stacked: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """Stacked parameters (K, ...) copied into one (K, P) tensor and given back as views of it that
    require grad as the originals did: a `PackedOptimizer` over those views finds the tensor
    (`_tiled_base`) and steps them all at once. None when the parameters differ in dtype or device
    (no one tensor holds them)."""
    tensors = list(stacked.values())
    if not tensors or len({(t.dtype, t.device) for t in tensors}) > 1:
        return None
    members = tensors[0].shape[0]
    flat = torch.cat([t.detach().reshape(members, -1) for t in tensors], dim=1)
    views, start = {}, 0
    for name, tensor in stacked.items():
        size = tensor[0].numel()
        views[name] = flat[:, start : start + size].view(tensor.shape).requires_grad_(tensor.requires_grad)
        start += size
    return views


def _tiled_base(params: list[Tensor]) -> Tensor | None:
    """The (K, P) tensor `params` are consecutive per-member-contiguous views of, in order, or None."""
    base = params[0]._base
    if base is None or base.dim() != 2 or not base.is_contiguous():
        return None
    offset = base.storage_offset()
    for p in params:
        in_place = p._base is base and p.storage_offset() == offset and p.stride(0) == base.stride(0)
        if not in_place or not p[0].is_contiguous():
            return None
        offset += p[0].numel()
    return base if offset == base.storage_offset() + base.shape[1] else None


def _view_like(flat: Tensor, p: Tensor, base: Tensor) -> Tensor:
    """The part of `flat` (shaped like `base`) that parameter `p` (a view of `base`) occupies."""
    start = p.storage_offset() - base.storage_offset()
    return flat[:, start : start + p[0].numel()].view(p.shape)


def _check_params(params: list[Tensor], members: int) -> None:
    if not params:
        raise ValueError("PackedOptimizer got an empty parameter list")
    for index, p in enumerate(params):
        if p.dim() == 0 or p.shape[0] != members:
            raise ValueError(
                f"parameter {index} has shape {tuple(p.shape)}: expected a leading member dimension of {members}"
            )


def _shortest(value: Tensor) -> float:
    # numpy prints a float32 in the fewest digits that read back as the same float32.
    return float(str(np.float32(value.item())))


class _Coefficients:
    """One step's per-member (K,) coefficients, cast once per dtype and viewed as (K, 1, ..., 1)."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        self._values = values
        self._cast: dict[tuple[str, torch.dtype], Tensor] = {}

    def __call__(self, name: str, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        # Low-precision parameters compute in float32, as torch's kernels do with a float scalar.
        dtype = dtype or torch.promote_types(like.dtype, torch.float32)
        key = (name, dtype)
        if key not in self._cast:
            self._cast[key] = self._values[name].to(dtype)
        return self._cast[key].view(-1, *([1] * (like.dim() - 1)))


# Update rules: one parameter (K, ...) of every member. Each mirrors torch's `_single_tensor_*`.

Update = Callable[[Tensor, Tensor, dict[str, Tensor], _Coefficients, bool], None]


def _l2(grad: Tensor, p: Tensor, coefs: _Coefficients) -> Tensor:
    # torch: `grad = grad.add(param, alpha=weight_decay)` when weight_decay != 0; adding 0 * p
    # leaves the gradient of a member without weight decay unchanged. Out of place, as in torch,
    # and in the gradient's dtype (a float32 coefficient would promote a bfloat16 gradient).
    return torch.addcmul(grad, p, coefs("weight_decay", p)).to(grad.dtype)


def _momentum_buffer_update(buf: Tensor, value: Tensor, coefs: _Coefficients) -> None:
    # Members with momentum: buf = momentum * buf + value. Members with momentum 0: torch keeps
    # no buffer (or leaves an old one untouched), so buf = 1 * buf + 0 * value. A zero buffer
    # then starts as torch's `clone` of the first value when momentum is switched on.
    buf.mul_(coefs("buffer_decay", buf)).addcmul_(value, coefs("buffer_gain", buf))


def _momentum_active(like: Tensor, coefs: _Coefficients) -> Tensor:
    return coefs("momentum_active", like, dtype=torch.bool)


def _sgd(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    d_p = _l2(grad, p, coefs)
    buf = state["momentum_buffer"]
    _momentum_buffer_update(buf, d_p, coefs)
    if nesterov:
        # Every member has momentum > 0 here (checked when set), as torch requires.
        d_p = d_p.addcmul(buf, coefs("momentum", p)).to(d_p.dtype)
    else:
        d_p = torch.where(_momentum_active(p, coefs), buf, d_p)
    p.addcmul_(d_p, coefs("neg_lr", p))


def _adam(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, decoupled: bool) -> None:
    if decoupled:
        # AdamW: `param.mul_(1 - lr * weight_decay)` before the moments.
        p.mul_(coefs("decoupled_decay", p))
    else:
        grad = _l2(grad, p, coefs)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    # lerp needs its weight in the moment's own dtype.
    exp_avg.lerp_(grad, coefs("one_minus_beta1", exp_avg, dtype=exp_avg.dtype))
    exp_avg_sq.mul_(ADAM_BETA2).addcmul_(grad, grad, value=1 - ADAM_BETA2)
    denom = (exp_avg_sq.sqrt() / coefs("bias_correction2_sqrt", p)).add_(ADAM_EPS)
    # torch: `param.addcdiv_(exp_avg, denom, value=-step_size)`, i.e. (value * exp_avg) / denom.
    p.addcdiv_(exp_avg * coefs("neg_step_size", p), denom)


def _rmsprop(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    grad = _l2(grad, p, coefs)
    square_avg, buf = state["square_avg"], state["momentum_buffer"]
    square_avg.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
    scaled = grad / square_avg.sqrt().add_(RMSPROP_EPS)
    # torch: with momentum, `buf.mul_(momentum).addcdiv_(grad, avg)` then `param -= lr * buf`;
    # without, `param -= lr * grad / avg`.
    _momentum_buffer_update(buf, scaled, coefs)
    p.addcmul_(torch.where(_momentum_active(p, coefs), buf, scaled), coefs("neg_lr", p))


def _adagrad(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    grad = _l2(grad, p, coefs)
    state_sum = state["sum"]
    state_sum.addcmul_(grad, grad, value=1)
    std = state_sum.sqrt().add_(ADAGRAD_EPS)
    # lr_decay 0: torch's clr = lr / (1 + (step - 1) * 0) is lr.
    p.addcdiv_(grad * coefs("neg_lr", p), std)


def _adadelta(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    grad = _l2(grad, p, coefs)
    square_avg, acc_delta = state["square_avg"], state["acc_delta"]
    square_avg.mul_(ADADELTA_RHO).addcmul_(grad, grad, value=1 - ADADELTA_RHO)
    std = square_avg.add(ADADELTA_EPS).sqrt_()
    delta = acc_delta.add(ADADELTA_EPS).sqrt_().div_(std).mul_(grad)
    acc_delta.mul_(ADADELTA_RHO).addcmul_(delta, delta, value=1 - ADADELTA_RHO)
    p.addcmul_(delta, coefs("neg_lr", p))


def _adam_l2(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    _adam(p, grad, state, coefs, decoupled=False)


def _adamw(p: Tensor, grad: Tensor, state: dict[str, Tensor], coefs: _Coefficients, nesterov: bool) -> None:
    _adam(p, grad, state, coefs, decoupled=True)


_UPDATES: dict[str, Update] = {
    "sgd": _sgd,
    "adam": _adam_l2,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
    "adadelta": _adadelta,
}
