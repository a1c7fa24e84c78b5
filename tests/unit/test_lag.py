"""qastream.telemetry.lag: consumer lag per topic and partition from a Faust consumer."""

import pytest
from faust.types import TP

from qastream.telemetry.lag import consumer_lag, fold_lag, partition_lag


@pytest.mark.parametrize("highwater, committed, read, lag", [
    (None, 5, 4, None),       # no highwater known: no figure rather than a wrong one
    (10, 10, 9, 0),           # all committed
    (10, 4, 9, 6),            # committed trails what was read
    (10, None, 6, 3),         # before the first commit, the read position stands in
    (10, None, None, 10),     # nothing read: the whole log is behind
    (3, 5, None, 0),          # never negative
])
def test_partition_lag(highwater, committed, read, lag):
    assert partition_lag(highwater, committed, read) == lag


def test_fold_lag_groups_by_topic_and_sums():
    folded = fold_lag([("b", 1, 10, 5, 7), ("a", 0, 3, 3, 2), ("b", 0, 4, None, None)])
    assert folded == {"total": 9, "topics": {
        "a": {"lag": 0, "partitions": {"0": {"highwater": 3, "committed": 3, "lag": 0}}},
        "b": {"lag": 9, "partitions": {"0": {"highwater": 4, "committed": None, "lag": 4},
                                       "1": {"highwater": 10, "committed": 5, "lag": 5}}},
    }}


class FakeConsumer:
    def __init__(self, assignment, highwaters, committed, fail=False):
        self._assignment = assignment
        self._highwaters = highwaters
        self._committed_offset = committed
        self._read_offset = {}
        self.fail = fail

    def assignment(self):
        return self._assignment

    async def highwaters(self, *tps):
        if self.fail:
            raise RuntimeError("broker unreachable")
        return {tp: self._highwaters[tp] for tp in tps}

    def highwater(self, tp):
        return self._highwaters[tp] - 1  # the cached value: older


async def test_consumer_lag_reports_only_the_graph_topics():
    pending, changelog = TP("questions-pending", 0), TP("qastream-status-changelog", 0)
    consumer = FakeConsumer({pending, changelog}, {pending: 12, changelog: 50}, {pending: 10})
    lag = await consumer_lag(consumer, ["questions-pending"])
    assert lag == {"total": 2, "topics": {"questions-pending": {
        "lag": 2, "partitions": {"0": {"highwater": 12, "committed": 10, "lag": 2}}}}}


async def test_consumer_lag_falls_back_to_the_cached_highwater():
    tp = TP("questions-pending", 1)
    consumer = FakeConsumer({tp}, {tp: 12}, {tp: 10}, fail=True)
    assert (await consumer_lag(consumer, ["questions-pending"]))["total"] == 1


async def test_consumer_lag_before_assignment_is_empty():
    class NotStarted:
        def assignment(self):
            raise RuntimeError("consumer not started")

    assert await consumer_lag(NotStarted(), ["questions-pending"]) == {"total": 0, "topics": {}}
