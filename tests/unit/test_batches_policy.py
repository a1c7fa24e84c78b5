"""qastream.policy.batches: counts folded from the questions, and the states a batch moves through."""

import pytest

from qastream.policy.batches import BatchStatus, RequestCounts, after_cancel, fold_counts, next_status


@pytest.mark.parametrize("total, items, expected", [
    (0, [], RequestCounts(0)),
    (3, [(None, None), ("pending", None), ("completed", False)], RequestCounts(3, completed=1)),
    (4, [("completed", True), ("completed", False), ("failed", None), ("cancelled", None)],
     RequestCounts(4, completed=2, low_quality=1, failed=1, cancelled=1)),
    # a question asked on two lines counts on both
    (2, [("completed", True), ("completed", True)], RequestCounts(2, completed=2, low_quality=2)),
    # a low-quality flag on an answer not (or no longer) the question's outcome does not count
    (1, [("pending", True)], RequestCounts(1)),
])
def test_fold_counts(total, items, expected):
    counts = fold_counts(total, items)
    assert counts == expected
    assert counts.finished <= counts.total


@pytest.mark.parametrize("current, counts, expected", [
    ("in_progress", RequestCounts(2, completed=1), None),
    ("in_progress", RequestCounts(2, completed=1, failed=1), BatchStatus.COMPLETED),
    ("in_progress", RequestCounts(2, completed=1, cancelled=1), BatchStatus.COMPLETED),
    ("cancelling", RequestCounts(3, completed=1, cancelled=1), None),   # a call still in flight
    ("cancelling", RequestCounts(3, completed=2, cancelled=1), BatchStatus.CANCELLED),
    ("completed", RequestCounts(1, completed=1), None),
    ("cancelled", RequestCounts(1, cancelled=1), None),
])
def test_next_status(current, counts, expected):
    assert next_status(current, counts) == expected


@pytest.mark.parametrize("now, expected", [(100.0, None), (129.9, None), (130.0, BatchStatus.CANCELLED)])
def test_a_cancelled_batch_ends_after_the_grace_its_calls_in_flight_have(now, expected):
    counts = RequestCounts(2, completed=1, cancelled=1)
    assert next_status("cancelling", counts, now=now, cancelled_at=100.0, grace=30.0) == expected
    assert next_status("in_progress", counts, now=now, cancelled_at=None, grace=30.0) == BatchStatus.COMPLETED


@pytest.mark.parametrize("current, expected", [
    ("in_progress", BatchStatus.CANCELLING), ("cancelling", None), ("cancelled", None), ("completed", None),
])
def test_a_cancel_moves_only_a_batch_in_progress(current, expected):
    assert after_cancel(current) == expected


def test_counts_as_json_name_every_count():
    assert RequestCounts(5, 3, 1, 1, 1).as_json() == {"total": 5, "completed": 3, "low_quality": 1, "failed": 1,
                                                       "cancelled": 1}
