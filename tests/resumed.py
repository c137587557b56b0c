"""The checks every test of a killed-then-resumed driver makes on the reports of the population."""

from __future__ import annotations


def assert_resumed_to_completion(before: list[dict], after: list[dict], members: int, epochs: int) -> None:
    """Reports from before the kill kept, every member at its last epoch, and the members that ran
    again went on from checkpoints rather than from scratch."""
    assert after[: len(before)] == before, "reports written before the kill are kept"
    last_epoch = {report["label"]: report["epoch"] for report in after}
    assert last_epoch == {f"member_{m:02d}": epochs for m in range(members)}, "every member finished"
    first_after_kill: dict[str, int] = {}
    for report in after[len(before):]:
        first_after_kill.setdefault(report["label"], report["epoch"])
    assert any(epoch > 1 for epoch in first_after_kill.values()), "members continued from checkpoints, not from scratch"
