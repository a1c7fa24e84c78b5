"""qastream.policy.live and qastream.web.sse: event names, ids, what a client has seen, and the framing."""

from __future__ import annotations

import json

import pytest

from qastream.policy.lifecycle import STAGE_STATE, TERMINAL, Stage, State, StatusRecord, version
from qastream.policy.live import (
    TERMINAL_RANKS,
    Change,
    event_name,
    is_news,
    parse_event_id,
    record_change,
    row_change,
    stage_of_status,
)
from qastream.web import sse

QID = "0123456789abcdef"


def record(stage: Stage, *, epoch: int = 1, attempt: int = 1, retries: int = 0) -> StatusRecord:
    return {"question_id": QID, "state": STAGE_STATE[stage], "stage": stage, "epoch": epoch, "attempt": attempt,
            "retries": retries, "version": list(version(epoch, attempt, retries, stage)), "accepted_at": 1.0,
            "updated_at": 2.0, "detail": None, "result": None}


def change(stage: Stage, **fields: int) -> Change:
    return record_change(record(stage, **fields), {})


@pytest.mark.parametrize("stage, name", [
    (Stage.QUEUED, "queued"), (Stage.WAITING_RETRY, "retrying"), (Stage.GENERATING, "generating"),
    (Stage.SCORING, "scoring"), (Stage.REGENERATING, "regenerating"), (Stage.COMPLETED, "completed"),
    (Stage.FAILED, "failed"),
    ("generating", "generating"),        # as decoded from the changelog: a plain string
    ("waiting_retry", "retrying"),
])
def test_events_are_named_for_their_stage_as_users_read_it(stage, name):
    assert event_name(stage) == name


@pytest.mark.parametrize("stage", list(Stage))
def test_a_record_is_an_event_with_its_version_as_id(stage):
    got = record_change(record(stage, epoch=2, attempt=3, retries=1), {"status": "x"})
    assert got.version == version(2, 3, 1, stage)
    assert got.id == ".".join(str(part) for part in version(2, 3, 1, stage))
    assert got.terminal == (STAGE_STATE[stage] in TERMINAL)
    assert got.body == {"status": "x"}


def test_terminal_ranks_are_read_from_the_lifecycle():
    assert TERMINAL_RANKS == {version(1, 1, 0, stage)[3] for stage in Stage if STAGE_STATE[stage] in TERMINAL}


@pytest.mark.parametrize("status, stage", [
    (State.PENDING, Stage.QUEUED), (State.RETRYING, Stage.WAITING_RETRY), (State.PROCESSING, Stage.GENERATING),
    (State.COMPLETED, Stage.COMPLETED), (State.FAILED, Stage.FAILED),
    ("archived", "archived"),   # a status no stage has stands for itself
])
def test_a_database_status_stands_for_the_first_stage_of_its_state(status, stage):
    assert stage_of_status(status) == stage


@pytest.mark.parametrize("status, name, terminal, expected_version", [
    ("pending", "queued", False, version(3, 1, 0, Stage.QUEUED)),
    ("completed", "completed", True, version(3, 1, 0, Stage.COMPLETED)),
    ("failed", "failed", True, version(3, 1, 0, Stage.FAILED)),
])
def test_a_database_row_is_an_event_too(status, name, terminal, expected_version):
    got = row_change({"status": status, "epoch": 3}, {"source": "database"})
    assert (got.name, got.terminal, got.version) == (name, terminal, expected_version)


def test_a_pending_row_is_the_queued_event_the_table_sends_after_it():
    """A client told ``queued`` from the database is not told again when the table's ``queued`` arrives."""
    from_row = row_change({"status": "pending", "epoch": 1}, {})
    assert not is_news(change(Stage.QUEUED), from_row.version)
    assert is_news(change(Stage.GENERATING), from_row.version)


@pytest.mark.parametrize("raw, parsed", [
    ("1.2.0.3", (1, 2, 0, 3)),
    (" 1.2.0.3 ", (1, 2, 0, 3)),
    ("12.1.4.6", (12, 1, 4, 6)),
    (None, None), ("", None), ("1.2.3", None), ("1.2.3.4.5", None), ("a.b.c.d", None), ("1.2.0.-3", None),
    ("1" * 10 + ".1.1.1", None),        # no number long enough to cost anything to parse
    ("١.٢.٠.٣", None),                   # digits of other scripts are not ours
])
def test_last_event_id_is_a_version_or_ignored(raw, parsed):
    assert parse_event_id(raw) == parsed


@pytest.mark.parametrize("stage, fields, last, news", [
    (Stage.GENERATING, {}, None, True),                                          # a first connection
    (Stage.GENERATING, {}, version(1, 1, 0, Stage.QUEUED), True),
    (Stage.GENERATING, {}, version(1, 1, 0, Stage.GENERATING), False),           # already sent
    (Stage.QUEUED, {}, version(1, 1, 0, Stage.SCORING), False),                  # behind: never backwards
    (Stage.GENERATING, {"attempt": 2}, version(1, 1, 0, Stage.REGENERATING), True),
    (Stage.WAITING_RETRY, {"retries": 2}, version(1, 1, 1, Stage.WAITING_RETRY), True),  # another retry
    (Stage.COMPLETED, {}, version(1, 1, 0, Stage.SCORING), True),
    (Stage.COMPLETED, {}, version(1, 1, 0, Stage.COMPLETED), False),             # the client has the end
    (Stage.COMPLETED, {}, version(1, 3, 2, Stage.FAILED), False),                # an end is an end
    (Stage.COMPLETED, {"epoch": 2}, version(1, 1, 0, Stage.FAILED), True),       # the end of a later epoch
])
def test_news_is_what_the_client_has_not_seen(stage, fields, last, news):
    assert is_news(change(stage, **fields), last) is news


def test_a_terminal_row_is_news_to_a_client_that_saw_the_table_ahead_of_the_row_version():
    """A row's version is an approximation: attempt 1, below what the table may have sent."""
    from_row = row_change({"status": "completed", "epoch": 1}, {})
    assert is_news(from_row, version(1, 3, 0, Stage.SCORING))
    assert not is_news(from_row, version(1, 3, 0, Stage.COMPLETED))


# -- framing ---------------------------------------------------------------------------------------------

def test_an_event_is_three_fields_and_a_blank_line():
    framed = sse.event("scoring", "1.1.0.3", {"status": "processing", "stage": "scoring"})
    assert framed == b'event: scoring\nid: 1.1.0.3\ndata: {"status":"processing","stage":"scoring"}\n\n'


def test_data_with_line_breaks_and_non_ascii_stays_on_one_line_and_round_trips():
    body = {"result": {"answer": "line one\nline two\r\n\u2028 caf\u00e9 \U0001F600"}}
    framed = sse.event("completed", "1.1.0.6", body)
    lines = framed.decode("utf-8").split("\n")
    assert lines[-2:] == ["", ""] and len(lines) == 5
    assert json.loads(lines[2].removeprefix("data: ")) == body


@pytest.mark.parametrize("name, event_id", [("a\nb", "1.1.0.0"), ("queued", "1\r1")])
def test_a_field_with_a_line_break_is_refused(name, event_id):
    with pytest.raises(ValueError, match="line break"):
        sse.event(name, event_id, {})


def test_the_ping_is_a_comment():
    assert sse.PING.startswith(b":") and sse.PING.endswith(b"\n\n")
    assert sse.HEADERS["Content-Type"].startswith("text/event-stream")
