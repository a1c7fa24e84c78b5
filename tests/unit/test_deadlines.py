"""qastream.policy.deadlines: every stage's deadline from the settings, and when a question is overdue."""

from dataclasses import asdict

import pytest

from qastream.policy.deadlines import Deadlines, backlog_held, overdue, stage_deadlines
from qastream.policy.lifecycle import STAGE_STATE
from qastream.settings import Settings

DEFAULTS = stage_deadlines(Settings())


@pytest.mark.parametrize("overrides, expected", [
    # Defaults: 120 s LLM time-out, 30 s margin, 32 per scoring batch, longest retry delay 30 s (quota).
    ({}, Deadlines(queued=150.0, generating=150.0, scoring=46.0, regenerating=150.0, waiting_retry=180.2)),
    # Short test settings: every deadline shrinks with the bound it is made of.
    ({"llm_timeout_seconds": 2.0, "deadline_margin_seconds": 1.0, "scorer_batch_size": 4,
      "retry_overload_delays": "0.5", "retry_quota_delay_seconds": 1.0, "breaker_max_cooldown_seconds": 2.0,
      "retry_release_interval": 0.5},
     Deadlines(queued=3.0, generating=3.0, scoring=3.0, regenerating=3.0, waiting_retry=5.5)),
    # An explicit queued deadline (a long backlog is expected) also covers regeneration and parked retries.
    ({"deadline_queued_seconds": 600.0},
     Deadlines(queued=600.0, generating=150.0, scoring=46.0, regenerating=600.0, waiting_retry=630.2)),
    # The longest overload delay counts when it exceeds the quota delay.
    ({"retry_overload_delays": "2,4,90"},
     Deadlines(queued=150.0, generating=150.0, scoring=46.0, regenerating=150.0, waiting_retry=240.2)),
    # An empty overload schedule leaves the quota delay and the breaker cool-down.
    ({"retry_overload_delays": "", "retry_quota_delay_seconds": 0.0, "breaker_max_cooldown_seconds": 5.0},
     Deadlines(queued=150.0, generating=150.0, scoring=46.0, regenerating=150.0, waiting_retry=155.2)),
])
def test_stage_deadlines(overrides, expected):
    assert asdict(stage_deadlines(Settings(**overrides))) == pytest.approx(asdict(expected))


@pytest.mark.parametrize("stage, deadline", [
    ("queued", 150.0), ("waiting_retry", 180.2), ("generating", 150.0), ("scoring", 46.0),
    ("regenerating", 150.0), ("completed", None), ("failed", None),
])
def test_every_stage_has_a_deadline_except_terminal_ones(stage, deadline):
    assert DEFAULTS.of(stage) == pytest.approx(deadline)


def test_the_table_covers_every_stage_of_the_lifecycle():
    assert {stage for stage in STAGE_STATE if DEFAULTS.of(stage) is not None} == {
        "queued", "waiting_retry", "generating", "scoring", "regenerating"}


def test_shortest():
    assert DEFAULTS.shortest() == 46.0


def record(stage: str, updated_at: float) -> dict:
    return {"stage": stage, "updated_at": updated_at}


LIMITS = Deadlines(queued=10.0, generating=20.0, scoring=5.0, regenerating=10.0, waiting_retry=40.0)


@pytest.mark.parametrize("stage, age, line_held, expected", [
    ("queued", 9.0, False, False),
    ("queued", 11.0, False, True),
    ("generating", 19.0, False, False),    # an LLM call may take up to its time-out
    ("generating", 21.0, False, True),
    ("scoring", 6.0, False, True),
    ("regenerating", 11.0, False, True),
    ("waiting_retry", 39.0, False, False),  # parked on its retry delay
    ("waiting_retry", 41.0, False, True),
    ("scoring", 4.0, False, False),
    # The circuit breaker holds questions waiting for a slot on purpose...
    ("queued", 500.0, True, False),
    ("regenerating", 500.0, True, False),
    ("waiting_retry", 500.0, True, False),
    # ...but not a call that never reported back, nor a lost scoring batch.
    ("generating", 21.0, True, True),
    ("scoring", 6.0, True, True),
    # Terminal in the status table but pending in the database: a replayed epoch whose messages were lost.
    ("completed", 9.0, False, False),
    ("failed", 11.0, False, True),
])
def test_overdue(stage, age, line_held, expected):
    assert overdue(record(stage, 1000.0), 1000.0 + age, LIMITS, line_held=line_held) is expected


def lag_of(pending: int, other: int = 0, bulk: int = 0) -> dict:
    return {"total": pending + other + bulk, "topics": {"pending": {"lag": pending, "partitions": {}},
                                                        "bulk": {"lag": bulk, "partitions": {}},
                                                        "events": {"lag": other, "partitions": {}}}}


@pytest.mark.parametrize("reading, held", [
    (None, False),                      # no reading yet: nothing holds the line
    ({"total": 0, "topics": {}}, False),
    (lag_of(0), False),
    (lag_of(32), False),                # up to 2 x the calls in flight: being generated, not a backlog
    (lag_of(33), True),                 # a backlog is ahead: queued questions wait their turn
    (lag_of(5000), True),
    (lag_of(0, other=5000), False),     # only the lanes' topics count
    (lag_of(0, bulk=2000), True),       # a bulk backlog: its questions wait their turn, interactive ones go first
    (lag_of(20, bulk=13), True),        # the lanes share the slots: their backlogs add up
])
def test_a_backlog_in_the_lanes_topics_holds_the_line(reading, held):
    assert backlog_held(reading, ["pending", "bulk"], in_flight=16) is held
