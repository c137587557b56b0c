"""The board of synchronous PBT across packs: its plan depends on the scores, not on which pack spoke first."""

from __future__ import annotations

from pbt.config import validate_config
from pbt.engines.packed.scheduler import PlanBoard
from pbt.search.space import search_space


def _offers(order: list[int]) -> dict[int, dict]:
    # Two packs of four; validation accuracies on 800 examples tie often, so ties are the rule here.
    scores = {0: [0.90, 0.85, 0.90, 0.70], 1: [0.85, 0.90, 0.70, 0.95]}
    offers = {}
    for pack in order:
        members = [{"slot": slot, "member": 4 * pack + slot, "score": score,
                    "hyperparams": {"lr": 0.01 * (1 + slot), "momentum": 0.9, "weight_decay": 1e-4}}
                   for slot, score in enumerate(scores[pack])]
        offers[pack] = {"members": members, "state": [f"state of pack {pack}"]}
    return offers


def _board() -> PlanBoard:
    config = validate_config({"search": {"lr": {"low": 0.005, "high": 0.05}},
                              "population": {"size": 8, "quantile_fraction": 0.25}, "seed": 3})
    return PlanBoard([0, 1], search_space(config, None).to_dict(), config.population.model_dump(), config.seed)


def test_the_plan_does_not_depend_on_the_order_packs_arrive_in():
    plans = [_board()._plan(4, _offers(order)) for order in ([0, 1], [1, 0])]
    assert plans[0] == plans[1]
    moves = [move for pack_moves in plans[0].values() for move in pack_moves]
    # The bottom quarter (members 3 and 6, scores 0.70) copy members of the top quarter.
    assert sorted(move["member"] for move in moves) == [3, 6]
    assert all(move["donor_member"] in (0, 2, 5, 7) for move in moves)
