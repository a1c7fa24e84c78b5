"""qastream.agents.reconcile: which of a worker's pending questions are stranded."""

import pytest

from qastream.agents.reconcile import UNKNOWN, caught_up, lanes_of, past_log_end, stranded, without_lane
from qastream.policy.deadlines import Deadlines

LIMITS = Deadlines(queued=10.0, generating=20.0, scoring=5.0, regenerating=10.0, waiting_retry=40.0)
NOW = 1000.0


def at(stage: str, age: float) -> dict:
    return {"stage": stage, "updated_at": NOW - age}


@pytest.mark.parametrize("candidates, unknown_ids, line_held, expected", [
    ({}, set(), False, {}),
    # The status table never heard of it: lost once accepted long enough ago.
    ({"a": None}, {"a"}, False, {"a": UNKNOWN}),
    ({"a": None}, set(), False, {}),
    # Known questions go by their stage's deadline.
    ({"a": at("queued", 11), "b": at("queued", 9), "c": at("scoring", 6)}, set(), False,
     {"a": "queued", "c": "scoring"}),
    ({"a": at("generating", 19), "b": at("waiting_retry", 39)}, {"a", "b"}, False, {}),
    # While the breaker holds the line, waiting is not being stranded.
    ({"a": at("queued", 100), "b": at("generating", 21)}, set(), True, {"b": "generating"}),
])
def test_stranded(candidates, unknown_ids, line_held, expected):
    assert stranded(candidates, unknown_ids, NOW, LIMITS, line_held) == expected


@pytest.mark.parametrize("committed, read, highwater, expected", [
    (10, 9, 10, False),      # caught up
    (5, 7, 10, False),       # read ahead of the last commit
    (None, None, 0, False),  # nothing read yet
    (61, 60, 12, True),      # an old offset committed on a re-created topic
    (None, 60, 12, True),    # read before the topic was re-created
    (61, 60, None, False),   # highwater unknown: do nothing
])
def test_past_log_end(committed, read, highwater, expected):
    assert past_log_end(committed, read, highwater) is expected


@pytest.mark.parametrize("read, highwater, expected", [
    (9, 10, True),        # read the last record (offset 9 of 0..9)
    (7, 10, False),       # two records not read yet: their events may be what the table lacks
    (None, 0, True),      # an empty partition
    (None, 3, False),     # nothing read of three records
    (9, None, False),     # no fetch answered yet: cannot tell
    (12, 10, True),       # read past a log end the last fetch reported
])
def test_caught_up(read, highwater, expected):
    assert caught_up(read, highwater) is expected


def test_a_stranded_question_goes_back_to_its_own_lane():
    records = {"a": {"stage": "queued", "lane": "bulk"}, "b": {"stage": "queued", "lane": "interactive"},
               "c": {"stage": "queued"}, "d": None}
    assert lanes_of(records) == {"a": "bulk", "b": "interactive", "c": "interactive", "d": "interactive"}
    # Without a lane on record, a question some batch asked goes back to the bulk lane.
    assert lanes_of(records, frozenset({"b", "c", "d"})) == {"a": "bulk", "b": "interactive", "c": "bulk",
                                                           "d": "bulk"}
    assert without_lane(records) == ["c", "d"]
