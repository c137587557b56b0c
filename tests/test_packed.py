"""A pack of K members trains exactly as K separate trainers would, each on its own batches."""

from __future__ import annotations

import pytest
import torch

from pbt.config import validate_config
from pbt.engines.packed.model import PackedTrainer, member_of
from pbt.optim import set_hyperparams
from pbt.registry import build_trainer
from pbt.trainer import TensorClassificationTrainer

HYPERPARAMS = [
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    {"lr": 0.02, "momentum": 0.0, "weight_decay": 0.0},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3},
]


class BatchNormTrainer(TensorClassificationTrainer):
    """Random 3-class data and an MLP with BatchNorm and dropout: state a pack must keep per member."""

    def __init__(self, config, device):
        super().__init__(config, device)
        data = torch.Generator().manual_seed(0)
        x = torch.randn(600, 12, generator=data)
        y = (x @ torch.randn(12, 3, generator=data)).argmax(1)
        self.x_train, self.y_train, self.x_val, self.y_val = x[:500], y[:500], x[500:], y[500:]
        self.batch_size = 25
        dropout = config.get("dropout", 0.0)
        self.model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                         torch.nn.Dropout(dropout), torch.nn.Linear(16, 3))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)


def members(kind: str, count: int = 3, **trainer) -> list[TensorClassificationTrainer]:
    """`count` trainers as the actor engine builds them (a seed each), with HYPERPARAMS."""
    if kind == "mnist1d":
        config = validate_config({"trainer": {"num_samples": 1000, "width": 0.5, "batch_size": 16, **trainer}})
    else:
        config = validate_config({"trainable": f"{__file__}:BatchNormTrainer", "trainer": trainer})
    built = [build_trainer(config, seed=member) for member in range(count)]
    for trainer, values in zip(built, HYPERPARAMS):
        set_hyperparams(trainer.optimizer, **values)
    return built


def train_both(kind: str, steps: int = 12, **trainer) -> tuple[PackedTrainer, list[TensorClassificationTrainer]]:
    """The same members packed and separate, stepped on the same per-member batches. The pack's
    counts of examples classified right must be each separate trainer's count on the same batch."""
    pack = PackedTrainer(members(kind, **trainer), "sgd")
    separate = members(kind, **trainer)
    batches = iter(_epochs(pack))
    for _ in range(steps):
        indices = next(batches)
        _, correct = pack.train_step(indices)
        for member, trainer in enumerate(separate):
            trainer.model.train()
            trainer._correct, trainer._seen = torch.zeros((), dtype=torch.long), 0
            trainer.train_step((trainer.x_train[indices[member]], trainer.y_train[indices[member]]))
            assert int(correct[member]) == int(trainer._correct) and trainer._seen == indices.shape[1]
    return pack, separate


def _epochs(pack: PackedTrainer):
    while True:
        yield from pack.batch_indices()


@pytest.mark.parametrize("kind", ["mnist1d", "batchnorm"])
def test_a_pack_trains_like_separate_models(kind):
    pack, separate = train_both(kind)
    assert pack.optimizer.flat is not None  # a CPU pack steps its parameters as one tensor
    for member, trainer in enumerate(separate):
        packed = pack.model.member_state_dict(member)
        for name, tensor in trainer.model.state_dict().items():  # weights and BatchNorm's running statistics
            torch.testing.assert_close(packed[name], tensor, msg=f"member {member}: {name}")
        assert pack.hyperparams(member) == pytest.approx(HYPERPARAMS[member])


def test_evaluation_per_member_matches_separate_models():
    pack, separate = train_both("mnist1d", steps=5)
    for metrics, trainer in zip(pack.evaluate(), separate):
        expected = trainer.evaluate()
        assert metrics.keys() == expected.keys() == {"val_loss", "val_acc", "test_acc"}
        for name in expected:
            assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name


def test_dropout_draws_a_different_mask_per_member():
    pack = PackedTrainer(members("batchnorm", dropout=0.5), "sgd")
    pack.model.load_member_state_dict(1, pack.model.member_state_dict(0))  # same weights in 0 and 1
    pack.model.train(True)
    x = torch.randn(3, 8, 12)
    x[1] = x[0]
    out = pack.model(x)
    assert not torch.allclose(out[0], out[1]), "identical members on identical inputs differ only by their masks"


def test_a_diverged_member_does_not_poison_its_pack_mates():
    pack = PackedTrainer(members("mnist1d"), "sgd")
    separate = members("mnist1d")
    pack.set_hyperparams(1, lr=1e6)
    set_hyperparams(separate[1].optimizer, lr=1e6)
    losses = [member["train_loss"] for member in pack.train_epoch()]
    assert not torch.isfinite(torch.tensor(losses[1])) or losses[1] > 1e3, "member 1 diverged"
    for member in (0, 2):
        assert torch.isfinite(torch.tensor(losses[member]))
        assert all(torch.isfinite(t).all() for t in pack.model.member_state_dict(member).values())


def test_an_exploit_inside_the_pack_moves_weights_buffers_and_optimizer_state():
    pack, _ = train_both("batchnorm", steps=6)
    pack.exploit(source=0, target=2)
    for name, tensor in pack.model.member_state_dict(0).items():
        torch.testing.assert_close(pack.model.member_state_dict(2)[name], tensor)
    donor, clone = pack.optimizer.member_state(0), pack.optimizer.member_state(2)
    torch.testing.assert_close(clone["step"], donor["step"])
    torch.testing.assert_close(clone["state"], donor["state"])  # SGD's momentum buffers
    assert pack.hyperparams(2) == pytest.approx(HYPERPARAMS[2]), "hyperparameters are explore's to set, not copied"


def test_a_member_moves_to_another_pack_with_its_state():
    source, _ = train_both("mnist1d", steps=4)
    target = PackedTrainer(members("mnist1d"), "sgd")
    target.load_member_state(1, source.member_state(0))
    for name, tensor in source.model.member_state_dict(0).items():
        torch.testing.assert_close(target.model.member_state_dict(1)[name], tensor)


def test_a_member_moves_through_the_donor_packs_saved_state(tmp_path):
    """Across packs a member travels as its slot of the donor pack's `state_dict` (its checkpoint,
    or the state it offers at a perturbation): weights, BatchNorm statistics, optimizer state."""
    donor, _ = train_both("batchnorm", steps=5)
    torch.save(donor.state_dict(), tmp_path / "pack.pt")
    saved = torch.load(tmp_path / "pack.pt", weights_only=True)
    recipient = PackedTrainer(members("batchnorm"), "sgd")
    recipient.load_member_state(2, member_of(saved, 0))
    for name, tensor in donor.model.member_state_dict(0).items():
        torch.testing.assert_close(recipient.model.member_state_dict(2)[name], tensor)
    assert any("running_mean" in name for name in donor.model.member_state_dict(0)), "buffers travel too"
    moved, original = recipient.optimizer.member_state(2), donor.optimizer.member_state(0)
    torch.testing.assert_close(moved["state"], original["state"])
    torch.testing.assert_close(moved["step"], original["step"])


def test_a_diverged_member_leaves_its_pack_mates_exactly_as_they_would_be():
    def run(lr_of_member_1: float) -> PackedTrainer:
        torch.manual_seed(0)
        pack = PackedTrainer(members("batchnorm"), "sgd")
        pack.set_hyperparams(1, lr=lr_of_member_1)
        torch.manual_seed(1)  # the same batches for both packs
        for _ in range(2):
            pack.train_epoch()
        return pack

    sane, diverged = run(0.02), run(1e8)
    assert not all(torch.isfinite(t).all() for t in diverged.model.member_state_dict(1).values()), "member 1 diverged"
    for member in (0, 2):
        for name, tensor in sane.model.member_state_dict(member).items():
            torch.testing.assert_close(diverged.model.member_state_dict(member)[name], tensor, rtol=0, atol=0)
