"""qastream inspect: how the four records of a question are laid out and compared."""

import pytest

from qastream.commands.inspect import agreement, flatten, panel, side_by_side


def test_flatten_dots_nested_keys_and_shows_epoch_times_in_utc():
    assert flatten({"state": "completed", "version": [1, 1, 0, 6], "accepted_at": 1_700_000_000.5,
                    "result": {"score": 0.91, "low_quality": False}, "detail": None}) == [
        ("state", "completed"), ("version", "[1, 1, 0, 6]"), ("accepted_at", "2023-11-14 22:13:20 UTC"),
        ("result.score", "0.91"), ("result.low_quality", "false"), ("detail", "null")]


def test_a_panel_wraps_long_values_and_says_when_there_is_nothing():
    lines = panel("database", {"answer": "word " * 20}, 30)
    assert lines[:2] == ["database", "--------"]
    assert all(len(line) <= 30 for line in lines)
    assert panel("cache", None, 30)[2] == "(none)"
    assert panel("cache", "in-process cache: not visible from the CLI", 80)[2].startswith("in-process")


def test_side_by_side_puts_two_panels_per_row_on_a_wide_terminal():
    text = side_by_side([("a", {"x": 1}), ("b", {"y": 2}), ("c", "note"), ("d", None)], 120)
    first = text.splitlines()[0]
    assert first.startswith("a") and "| b" in first
    assert len(side_by_side([("a", {"x": 1}), ("b", {"y": 2})], 80).splitlines()[0]) == 1  # narrow: stacked


@pytest.mark.parametrize("status, row, expected", [
    (None, None, "unknown question"),
    (None, {"status": "completed", "epoch": 1}, "database only (completed)"),
    ({"state": "pending", "epoch": 1}, None, "status table only (pending)"),
    ({"state": "completed", "epoch": 2}, {"status": "completed", "epoch": 2}, "agree: completed, epoch 2"),
    ({"state": "processing", "epoch": 1}, {"status": "pending", "epoch": 1}, "in flight"),
    ({"state": "completed", "epoch": 1}, {"status": "pending", "epoch": 2}, "they differ"),
])
def test_agreement(status, row, expected):
    assert expected in agreement(status, row)
