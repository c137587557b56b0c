"""The captured pack step's CPU side: a static input buffer and tensors a graph could replay.

On CUDA `PackedTrainer(capture=True)` captures its step as a CUDA graph (tests/test_cuda.py);
here the same step runs eagerly on the same static buffer, so what capture relies on is checked
without a GPU: the same numbers as the plain step, and every tensor the step reads kept at its
address through explore, exploit, a member moving in and a checkpoint loading.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from test_packed import members

from pbt.config import validate_config
from pbt.engines.packed.capture import StaticStep, capture_wanted
from pbt.engines.packed.model import PackedTrainer, member_of
from pbt.errors import PbtError
from pbt.reporting.progress import gpu_memory_line


def step_tensors(pack: PackedTrainer) -> dict[str, torch.Tensor]:
    """What a captured step reads or writes in place: weights, buffers, optimizer state, hyperparameters."""
    optimizer = pack.optimizer
    tensors = {**pack.model.params, **pack.model.buffers, "lr": optimizer.lr, "momentum": optimizer.momentum,
               "weight_decay": optimizer.weight_decay, "steps": optimizer.steps}
    for index, state in enumerate(optimizer.state):
        tensors.update({f"state.{index}.{key}": tensor for key, tensor in state.items()})
    return tensors


def script(capture: bool, steps: int = 10) -> tuple[PackedTrainer, list[torch.Tensor], dict[str, int]]:
    """A pack trained `steps` steps on fixed batches with an explore, an exploit, a member moved in
    from another pack and a checkpoint loaded on the way; its losses; where its tensors lived."""
    torch.manual_seed(0)
    pack = PackedTrainer(members("batchnorm", dropout=0.3), "sgd", capture=capture)
    other = PackedTrainer(members("batchnorm", dropout=0.3), "sgd")
    batches = list(itertools.islice(pack.batch_indices(), steps))
    addresses = {name: tensor.data_ptr() for name, tensor in step_tensors(pack).items()}
    losses, saved = [], None
    torch.manual_seed(1)  # the same dropout masks for both scripts
    for step, indices in enumerate(batches):
        if step == 3:
            pack.set_hyperparams(1, lr=0.2, momentum=0.7, weight_decay=1e-3)
            pack.exploit(source=0, target=2)
            saved = {key: value for key, value in pack.state_dict().items() if key != "rng"}
            saved = {key: _copied(value) for key, value in saved.items()}
        if step == 6:
            pack.load_member_state(0, member_of(other.state_dict(), 1))
            pack.load_state_dict({**saved, "rng": pack.state_dict()["rng"]})
        losses.append(pack.train_step(indices)[0])
    return pack, losses, addresses


def _copied(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def test_the_static_step_trains_exactly_as_the_plain_step():
    plain, plain_losses, _ = script(capture=False)
    static, static_losses, _ = script(capture=True)
    assert static.static_step is not None and static.static_step.calls == len(static_losses)
    assert not static.captured, "no CUDA graph on the CPU: the same step runs eagerly on the static buffer"
    for got, expected in zip(static_losses, plain_losses):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for name, tensor in step_tensors(plain).items():
        torch.testing.assert_close(step_tensors(static)[name], tensor, rtol=0, atol=0, msg=name)


def test_explore_exploit_moves_and_checkpoints_keep_every_tensor_where_a_graph_reads_it():
    pack, _, addresses = script(capture=True)
    moved = [name for name, tensor in step_tensors(pack).items() if tensor.data_ptr() != addresses[name]]
    assert not moved, f"a captured graph would read stale memory for {moved}"
    assert pack.hyperparams(1) == pytest.approx({"lr": 0.2, "momentum": 0.7, "weight_decay": 1e-3})


def test_the_static_step_outputs_are_the_callers_own():
    buffer_reads = []

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        buffer_reads.append(indices.data_ptr())
        return (indices.sum(1).float(),)

    static = StaticStep(step, torch.zeros(2, 3, dtype=torch.long), graphed=False)
    first = static(torch.ones(2, 3, dtype=torch.long))[0]
    second = static(torch.full((2, 3), 2, dtype=torch.long))[0]
    assert first.tolist() == [3.0, 3.0] and second.tolist() == [6.0, 6.0]
    assert len(set(buffer_reads)) == 1 and buffer_reads[0] == static.input.data_ptr(), "one static input buffer"


def test_another_batch_size_than_the_static_steps_runs_eagerly():
    pack = PackedTrainer(members("batchnorm"), "sgd", capture=True)
    indices = next(pack.batch_indices())
    pack.train_step(indices)
    losses, right = pack.train_step(indices[:, :4])  # as `vmap_obstacle` tries a pack: 4 examples each
    assert losses.shape == (3,) and right.shape == (3,) and pack.static_step.calls == 1


@pytest.mark.parametrize("setting, device, wanted", [
    ("on", "cuda", True), ("on", "cpu", False), ("auto", "cuda", False), ("auto", "cpu", False), ("off", "cuda", False),
])
def test_capture_is_on_only_where_asked_and_on_cuda(setting, device, wanted):
    assert capture_wanted(setting, torch.device(device)) is wanted


def test_population_capture_reads_yaml_words_and_needs_a_gpu():
    gpu = {"resources": {"gpu": 1}}
    assert validate_config({"population": {"capture": True}, **gpu}).population.capture == "on"  # YAML's `on`
    assert validate_config({"population": {"capture": False}}).population.capture == "off"
    assert validate_config({}).population.capture == "auto"
    with pytest.raises(PbtError, match=r"population.capture=on .* needs a GPU, but got resources.gpu=0"):
        validate_config({"population": {"capture": "on"}})
    with pytest.raises(PbtError, match="population.capture: Input should be 'auto', 'on' or 'off', but got 'always'"):
        validate_config({"population": {"capture": "always"}})


def test_the_packs_gpu_line_says_when_its_step_is_a_replayed_graph():
    result = {"gpu_peak_mib": 900.0, "gpu_total_mib": 143771.0}
    eager = gpu_memory_line({"members": [0, 1]}, result)
    assert eager == "  [gpu] pack of members 0, 1: peak GPU memory 900 MiB of 140 GiB after its first epoch (PyTorch's pool)"
    captured = gpu_memory_line({"members": [0, 1]}, {**result, "step_captured": True})
    assert captured == eager + "; its training step replayed as a CUDA graph"
