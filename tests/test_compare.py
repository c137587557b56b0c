"""The comparison's numbers on hand-made reports: compute accounting, selection by validation, targets."""

from __future__ import annotations

import pytest

from pbt.reporting.compare import best_so_far, compare_arms, compute_to_reach, summarize_arm


def report(label, epoch, val, test, executed=1, seconds=1.0, diverged=False, lr=0.1):
    return {"label": label, "epoch": epoch, "val_acc": val, "test_acc": test, "epochs_executed": executed,
            "compute_seconds": seconds, "diverged": diverged, "lr": lr, "momentum": 0.9, "weight_decay": 1e-4}


def test_runs_advance_together_whatever_order_tune_ran_them_in():
    # Tune ran run "a" to the end before "b" started; compute is counted epoch by epoch across runs.
    reports = [report("a", 1, 0.5, 0.5), report("a", 2, 0.6, 0.6), report("b", 1, 0.7, 0.65), report("b", 2, 0.8, 0.7)]
    curve = best_so_far(reports)
    assert [(p.epochs, p.best_val_acc, p.test_acc) for p in curve] == [
        (1, 0.5, 0.5), (2, 0.7, 0.65), (3, 0.7, 0.65), (4, 0.8, 0.7)
    ]
    assert compute_to_reach(curve, 0.7) == {"epochs": 2, "seconds": 2.0}
    assert compute_to_reach(curve, 0.9) is None


def test_compute_to_target_does_not_depend_on_which_run_reported_first():
    # Runs "a" and "b" finish epoch 1 together; only "b" reaches 0.7. Whichever report arrived first,
    # the target is reached when "b" is counted, after "a" (label order): 2 epochs, not 1 or 2 by timing.
    a1, b1 = report("a", 1, 0.5, 0.5), report("b", 1, 0.7, 0.6)
    a2, b2 = report("a", 2, 0.6, 0.6), report("b", 2, 0.8, 0.7)
    arrivals = [[a1, b1, a2, b2], [b1, a1, b2, a2], [b1, a1, a2, b2]]
    curves = [best_so_far(reports) for reports in arrivals]
    assert all(curve == curves[0] for curve in curves)
    assert compute_to_reach(curves[0], 0.7) == {"epochs": 2, "seconds": 2.0}


def test_budget_counts_epochs_executed_not_training_iteration():
    # A diverged member reports without training (0 epochs executed); a clone's epoch jumps to its donor's.
    reports = [report("a", 1, 0.5, 0.5), report("b", 1, 0.0, 0.0, diverged=True), report("b", 2, 0.0, 0.0, executed=0, seconds=0.01),
               report("b", 5, 0.6, 0.6)]
    arm = summarize_arm("pbt", reports)
    assert arm.epochs == 3 and arm.seconds == pytest.approx(3.01)
    assert arm.diverged == ["b"] and arm.runs == 2


def test_the_chosen_run_is_picked_by_validation_never_by_test():
    reports = [report("a", 2, 0.80, 0.95), report("b", 2, 0.85, 0.70)]
    arm = summarize_arm("grid", reports)
    assert arm.chosen["label"] == "b" and arm.chosen["test_acc"] == 0.70
    # A report from before schedules: the rate trained was the peak.
    assert arm.schedule == [{"epoch": 2, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "lr_trained": 0.1}]
    scheduled = summarize_arm("grid", [{**report("b", 2, 0.85, 0.70), "lr_trained": 0.04}])
    assert scheduled.schedule[0]["lr_trained"] == 0.04 and scheduled.schedule[0]["lr"] == 0.1


def test_a_tie_in_validation_accuracy_goes_to_the_lower_validation_loss_whatever_the_arrival_order():
    a, b, c = report("a", 2, 0.90, 0.95), report("b", 2, 0.90, 0.80), report("c", 2, 0.90, 0.70)
    a["val_loss"], b["val_loss"], c["val_loss"] = 0.40, 0.30, 0.30
    for arrival in ([a, b, c], [c, b, a], [b, c, a]):
        assert summarize_arm("grid", arrival).chosen["label"] == "b", "b and c tie on loss too: the label decides"


def test_failed_runs_are_counted_even_without_reports():
    arm = summarize_arm("grid", [report("a", 1, 0.5, 0.5)], failed=["b"])
    assert arm.failed == ["b"] and arm.runs == 2


def test_the_default_target_is_the_grids_final_best_and_shares_are_of_the_grids_compute():
    grid_peak = report("g9", 1, 0.9, 0.5)  # a peak that did not last: not the grid's final best
    grid = summarize_arm("grid", [grid_peak] + [report(f"g{i}", e, 0.5 + 0.05 * i + 0.01 * e, 0.5)
                                               for i in range(4) for e in (1, 2)] + [report("g9", 2, 0.3, 0.3)])
    pbt = summarize_arm("pbt", [report(f"p{i}", e, 0.6 + 0.1 * e, 0.6) for i in range(4) for e in (1, 2)])
    summary = compare_arms({"pbt": pbt, "grid": grid}, target=None)
    assert summary["target_val_acc"] == pytest.approx(0.67)
    assert summary["target_source"] == "the grid's final best validation accuracy"
    # The peak of g9 counts for the curve, after g0-g3's first epochs (runs count in label order).
    assert summary["arms"]["grid"]["to_target"]["epochs"] == 5
    assert summary["arms"]["pbt"]["to_target"]["epochs"] == 1
    assert summary["share_of_grid_compute_to_target"]["pbt"]["epochs"] == pytest.approx(1 / 10)


def test_a_configured_target_is_kept():
    pbt = summarize_arm("pbt", [report("p", 1, 0.6, 0.6)])
    summary = compare_arms({"pbt": pbt}, target=0.9)
    assert summary["target_val_acc"] == 0.9 and summary["arms"]["pbt"]["to_target"] is None
