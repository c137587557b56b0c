"""Every optimizer pbt offers works in every command: momentum only where the optimizer has one,
and a learning-rate range for each of the six."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pbt import packed_optim
from pbt.config import PopulationConfig, validate_config
from pbt.engines.actor.scheduler import ClippedPBT
from pbt.optim import HAS_MOMENTUM, OPTIMIZERS, get_hyperparams, has_momentum, make_optimizer, set_hyperparams
from pbt.range_test.finder import find_lr_range
from pbt.reporting.compare import ArmSummary
from pbt.reporting.figures import schedule_figure
from pbt.search.space import Bound, SearchSpace
from pbt.stages.job import prepare_space
from pbt.stages.lineage import format_schedule

NO_MOMENTUM_SPACE = SearchSpace(Bound(0.001, 0.04, log=True, start_low=0.01), None, Bound(1e-5, 1e-3, log=True))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_has_momentum_says_what_the_optimizer_reads_back(name):
    optimizer = make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))])
    set_hyperparams(optimizer, momentum=0.9)
    assert (get_hyperparams(optimizer)["momentum"] == pytest.approx(0.9)) is has_momentum(name)


def test_one_definition_of_the_optimizers_with_momentum():
    assert packed_optim.HAS_MOMENTUM is HAS_MOMENTUM
    assert has_momentum(None) and has_momentum("lamb"), "a trainer's own optimizer keeps its momentum"


def test_the_printed_space_has_no_momentum_line_without_momentum(tmp_path, capsys):
    given = {"storage_path": str(tmp_path), "search": {"lr": {"low": 0.01, "high": 0.04}}}
    prepare_space(validate_config({**given, "trainer": {"optimizer": "adagrad"}}))
    printed = capsys.readouterr().out
    assert "lr " in printed and "weight_decay" in printed and "momentum" not in printed
    prepare_space(validate_config({**given, "trainer": {"optimizer": "sgd"}}))
    assert "momentum      [0.85, 0.95]" in capsys.readouterr().out


def test_pbt_neither_mutates_nor_reports_an_absent_momentum():
    scheduler = ClippedPBT(NO_MOMENTUM_SPACE, PopulationConfig(), metric="val_acc", seed=0)
    assert set(scheduler._hyperparam_mutations) == {"lr", "weight_decay"}
    donor = SimpleNamespace(config={"member": 1, "lr": 0.02, "momentum": 0.0, "weight_decay": 1e-4},
                            last_result={"training_iteration": 4})
    for _ in range(50):
        new, operations = scheduler._get_new_config(SimpleNamespace(config={"member": 3}), donor)
        assert new["member"] == 3 and new["momentum"] == 0.0 and set(operations) == {"lr", "weight_decay"}


SCHEDULE = [{"epoch": e, "member": 0, "lr": 0.02 * 0.8 ** (e // 3), "momentum": 0.0, "weight_decay": 1e-4,
             "val_acc": 0.1 * e} for e in range(1, 7)]


def test_a_schedule_without_momentum_has_no_momentum_column():
    table = format_schedule(SCHEDULE)
    assert "momentum" not in table.splitlines()[0] and "weight decay" in table.splitlines()[0]
    assert table.splitlines()[1].split() == ["1-2", "member", "0", "0.02", "0.0001", "0.2000"]
    with_momentum = format_schedule([{**entry, "momentum": 0.9} for entry in SCHEDULE])
    assert "momentum" in with_momentum.splitlines()[0] and "0.900" in with_momentum.splitlines()[1]


def _arm(name: str, momentum: float) -> ArmSummary:
    schedule = [{**entry, "momentum": momentum} for entry in SCHEDULE]
    return ArmSummary(name, 1, 6, 6.0, 0.6, None, [], [], schedule=schedule)


def test_the_schedule_plot_has_a_momentum_panel_only_where_an_arm_had_momentum():
    without = schedule_figure({"pbt": _arm("pbt", 0.0), "grid": _arm("grid", 0.0)}, "adagrad")
    assert [axis.get_title() for axis in without.axes] == ["lr", "weight decay"]
    mixed = schedule_figure({"pbt": _arm("pbt", 0.0), "grid": _arm("grid", 0.9)}, "grid over sgd and adagrad")
    assert [axis.get_title() for axis in mixed.axes] == ["lr", "momentum", "weight decay"]


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_range_test_finds_a_range_for_every_optimizer(name, tiny_mnist1d):
    config = validate_config({"trainer": {**tiny_mnist1d, "optimizer": name}, "lr_range": {"seeds": 1}})
    result = find_lr_range(config).chosen
    assert 0 < result.lr_low < result.suggestion < result.lr_high < result.divergence_lr
