"""qastream.policy.lifecycle: the idempotent fold of status events into the status and attempts tables."""

import json

import pytest

from qastream.models import Job, StatusEvent, event_for, expiry_event
from qastream.policy.lifecycle import (
    EXPIRE,
    STAGE_RANK,
    STAGE_STATE,
    TERMINAL,
    AttemptCounts,
    Stage,
    State,
    StatusEventFields,
    StatusRecord,
    due_to_expire,
    expires,
    fold_attempts,
    fold_status,
    is_cancelled,
    is_stale,
    version,
)

QID = "0123456789abcdef"


def event(stage, *, epoch=1, attempt=1, retries=0, accepted_at=100.0, at=101.0, detail=None, result=None,
          lane="interactive"):
    return {"question_id": QID, "stage": stage, "epoch": epoch, "attempt": attempt, "retries": retries,
            "accepted_at": accepted_at, "at": at, "detail": detail, "result": result, "lane": lane}


def fold_all(events, fold=fold_status):
    record = None
    for e in events:
        new = fold(record, e)
        if new is not None:
            record = new
    return record


# -- the enums ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", list(Stage))
def test_every_stage_maps_to_a_state_and_has_a_rank(stage):
    assert STAGE_STATE[stage] in set(State)
    assert stage in STAGE_RANK


def test_stage_state_covers_exactly_the_stages():
    assert set(STAGE_STATE) == set(Stage) == set(STAGE_RANK)
    assert set(STAGE_STATE.values()) == set(State)  # every state is reachable
    assert TERMINAL == {State.COMPLETED, State.FAILED, State.CANCELLED}


def test_ranks_follow_the_order_of_the_stages():
    assert sorted(Stage, key=STAGE_RANK.__getitem__) == list(Stage)


def test_ranks_stay_as_persisted_versions_know_them():
    # Versions in the status changelog carry these ranks; 5 was the removed stage "storing".
    assert STAGE_RANK == {"queued": 0, "waiting_retry": 1, "generating": 2, "scoring": 3, "regenerating": 4,
                          "completed": 6, "failed": 7, "cancelled": 8}


@pytest.mark.parametrize("enum", [State, Stage])
def test_members_are_their_strings(enum):
    for member in enum:
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
        assert enum(member.value) is member
        assert json.dumps(member) == f'"{member.value}"'


@pytest.mark.parametrize("stage", list(Stage))
def test_a_status_event_sent_with_a_stage_folds_like_its_string(stage):
    job = Job(question_id=QID, question_text="q", accepted_at=100.0)
    sent = event_for(job, stage)
    wire = sent.dumps()
    assert json.loads(wire)["stage"] == stage.value
    received = StatusEvent.loads(wire)
    assert type(received.stage) is str  # what a changelog or a topic hands back
    assert fold_status(None, received.asdict()) == fold_status(None, sent.asdict())
    assert json.dumps(fold_status(None, sent.asdict())) == json.dumps(fold_status(None, received.asdict()))


def test_the_typed_fields_mirror_the_status_event_and_the_fold():
    assert set(StatusEventFields.__annotations__) == set(StatusEvent._options.fields)
    assert set(event("queued")) == set(StatusEventFields.__annotations__)
    assert set(fold_status(None, event("queued"))) == set(StatusRecord.__annotations__)
    assert set(fold_attempts(None, event("scoring"))) == set(AttemptCounts.__annotations__)


# -- fold_status -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, state", [
    ("queued", State.PENDING),
    ("waiting_retry", State.RETRYING),
    ("generating", State.PROCESSING),
    ("scoring", State.PROCESSING),
    ("regenerating", State.PROCESSING),
    ("completed", State.COMPLETED),
    ("failed", State.FAILED),
])
def test_first_event_creates_the_record_with_its_state(stage, state):
    record = fold_status(None, event(stage, attempt=2, retries=1, detail="d", at=105.0))
    assert record == {
        "question_id": QID, "state": state, "stage": stage, "epoch": 1, "attempt": 2, "retries": 1,
        "version": [1, 2, 1, STAGE_RANK[stage]], "accepted_at": 100.0, "updated_at": 105.0,
        "detail": "d", "result": None, "lane": "interactive",
    }


@pytest.mark.parametrize("lane, recorded", [
    ("bulk", "bulk"),
    ("interactive", "interactive"),
    (None, "interactive"),        # an event written before lanes existed
    ("express", "interactive"),   # a lane this version does not know
])
def test_the_record_keeps_the_lane_reconciliation_re_enqueues_on(lane, recorded):
    e = event("queued", lane=lane)
    if lane is None:
        del e["lane"]
    assert fold_status(None, e)["lane"] == recorded


@pytest.mark.parametrize("older, newer", [
    (event("queued"), event("generating")),                                     # later stage
    (event("scoring"), event("regenerating")),
    (event("scoring"), event("completed", result={"answer": "a"})),
    (event("scoring", attempt=1), event("generating", attempt=2)),              # later attempt beats stage
    (event("generating", retries=0), event("waiting_retry", retries=1)),       # later retry beats stage
    (event("completed", epoch=1, attempt=3), event("queued", epoch=2)),         # new epoch beats everything
    (event("failed", epoch=1, retries=5), event("queued", epoch=2)),
])
def test_newer_version_wins_whatever_the_arrival_order(older, newer):
    in_order = fold_all([older, newer])
    assert in_order["stage"] == newer["stage"]
    assert in_order["epoch"] == newer["epoch"]
    # The late (older) event does not move the question backwards.
    assert fold_status(in_order, older) is None
    assert fold_all([newer, older]) == in_order


def test_stale_event_returns_none():
    current = fold_status(None, event("scoring", attempt=2))
    assert fold_status(current, event("generating", attempt=2)) is None
    assert fold_status(current, event("completed", attempt=1)) is None


def test_exact_redelivery_returns_none():
    e = event("completed", result={"answer": "42"})
    current = fold_status(None, e)
    assert current is not None
    assert fold_status(current, dict(e)) is None


def test_same_version_with_new_content_is_written():
    current = fold_status(None, event("generating", at=101.0))
    again = fold_status(current, event("generating", at=102.0))
    assert again is not None and again["updated_at"] == 102.0


def test_new_epoch_resets_the_record():
    done = fold_all([event("queued"), event("generating", attempt=3, retries=2),
                     event("completed", attempt=3, retries=2, result={"answer": "old"}, detail="x")])
    assert done["state"] == State.COMPLETED
    reset = fold_status(done, event("queued", epoch=2, accepted_at=500.0, at=500.0))
    assert reset["state"] == State.PENDING
    assert (reset["epoch"], reset["attempt"], reset["retries"]) == (2, 1, 0)
    assert reset["accepted_at"] == 500.0
    assert reset["result"] is None and reset["detail"] is None


def test_completed_record_keeps_its_result():
    record = fold_all([event("queued"), event("scoring"), event("completed", result={"answer": "42"})])
    assert record["result"] == {"answer": "42"}
    assert record["state"] == State.COMPLETED


def test_version_orders_epoch_then_attempt_then_retries_then_stage():
    assert version(1, 2, 3, "completed") == (1, 2, 3, STAGE_RANK["completed"])
    ordered = [version(1, 1, 0, "queued"), version(1, 1, 0, "failed"), version(1, 1, 1, "queued"),
               version(1, 2, 0, "queued"), version(2, 1, 0, "queued")]
    assert sorted(reversed(ordered)) == ordered


# -- fold_attempts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, attempt, retries, generations", [
    ("queued", 1, 0, 0),
    ("generating", 1, 0, 0),
    ("waiting_retry", 1, 2, 0),
    ("scoring", 1, 0, 1),
    ("regenerating", 2, 0, 2),
    ("scoring", 3, 1, 3),
    ("completed", 3, 1, 3),
    ("failed", 1, 3, 0),   # failed while generating: no answer was produced
    ("failed", 2, 3, 1),
])
def test_attempt_counts_are_set_from_the_event(stage, attempt, retries, generations):
    assert fold_attempts(None, event(stage, attempt=attempt, retries=retries)) == {
        "epoch": 1, "generations": generations, "retries": retries}


@pytest.mark.parametrize("e", [event("scoring", attempt=2, retries=1), event("waiting_retry", retries=3),
                               event("completed", attempt=3)])
def test_applying_the_same_event_twice_changes_nothing(e):
    once = fold_attempts(None, e)
    assert fold_attempts(once, e) is None
    assert fold_all([e, e, e], fold_attempts) == once


def test_attempts_never_increment_on_redelivery():
    events = [event("scoring", attempt=1), event("scoring", attempt=2), event("scoring", attempt=2),
              event("scoring", attempt=1)]
    assert fold_all(events, fold_attempts) == {"epoch": 1, "generations": 2, "retries": 0}


@pytest.mark.parametrize("current_event, stale_event", [
    (event("scoring", attempt=2), event("scoring", attempt=1)),
    (event("waiting_retry", retries=2), event("waiting_retry", retries=1)),
    (event("completed", attempt=2, retries=1), event("generating", attempt=2, retries=1)),
    (event("queued", epoch=2), event("completed", epoch=1, attempt=3)),
])
def test_stale_attempts_event_returns_none(current_event, stale_event):
    current = fold_attempts(None, current_event)
    assert fold_attempts(current, stale_event) is None


def test_new_epoch_resets_the_attempt_counts():
    current = fold_attempts(None, event("completed", attempt=3, retries=4))
    assert fold_attempts(current, event("queued", epoch=2)) == {"epoch": 2, "generations": 0, "retries": 0}


# -- is_stale --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("current_event, work, expected", [
    (None, (1, 1, 0, "generating"), False),
    (event("scoring"), (1, 1, 0, "generating"), True),          # generation already done
    (event("generating"), (1, 1, 0, "generating"), False),      # same point: not past it
    (event("queued"), (1, 1, 0, "generating"), False),
    (event("generating"), (1, 1, 1, "generating"), False),      # a retry is new work
    (event("generating", attempt=2), (1, 1, 0, "scoring"), True),
    (event("completed", epoch=1), (2, 1, 0, "generating"), False),  # a new epoch is new work
    (event("queued", epoch=2), (1, 3, 0, "scoring"), True),
])
def test_is_stale(current_event, work, expected):
    current = None if current_event is None else fold_status(None, current_event)
    assert is_stale(current, *work) is expected


# -- expiry ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, updated_at, now, retention, expected", [
    ("completed", 101.0, 200.0, 60.0, True),      # finished long enough ago
    ("failed", 101.0, 200.0, 60.0, True),
    ("completed", 101.0, 161.0, 60.0, True),      # exactly at the retention
    ("completed", 101.0, 160.0, 60.0, False),     # not yet
    ("generating", 101.0, 9999.0, 60.0, False),   # in flight: never expires, however old
    ("queued", 101.0, 9999.0, 60.0, False),
    ("waiting_retry", 101.0, 9999.0, 60.0, False),
    ("completed", 101.0, 9999.0, 0.0, False),     # retention 0 keeps everything
])
def test_due_to_expire(stage, updated_at, now, retention, expected):
    record = fold_status(None, event(stage, at=updated_at))
    assert due_to_expire(record, now, retention) is expected


def expiry_of(record):
    return StatusEvent(**expiry_event(record, now=500.0).asdict()).asdict()


DONE = fold_status(None, event("completed", attempt=2, retries=1))


@pytest.mark.parametrize("current, expiry, expected", [
    (DONE, expiry_of(DONE), True),                                                    # the record the timer saw
    (None, expiry_of(DONE), False),                                                   # redelivered: already gone
    (fold_status(None, event("queued", epoch=2)), expiry_of(DONE), False),            # resubmitted meanwhile
    (fold_status(None, event("failed", attempt=3, retries=1)), expiry_of(DONE), False),  # moved on meanwhile
    (DONE, {**expiry_of(DONE), "result": None}, False),                               # no version: keep
    (DONE, {**expiry_of(DONE), "stage": "completed"}, False),                         # not an expiry
    (fold_status(None, event("generating")), expiry_of(fold_status(None, event("generating"))), False),  # in flight
])
def test_expires_only_the_version_seen(current, expiry, expected):
    assert expires(current, expiry) is expected


def test_an_expiry_event_carries_the_version_it_expires():
    fields = expiry_of(DONE)
    assert fields["stage"] == EXPIRE and fields["question_id"] == QID
    assert fields["result"] == {"version": DONE["version"]}
    assert (fields["epoch"], fields["attempt"], fields["retries"]) == (1, 2, 1)


# -- cancellation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("before, after, state, attempt", [
    # a cancel ends its epoch whatever attempt the question reached (the canceller sends attempt 1)
    ([event("queued")], [event("cancelled")], State.CANCELLED, 1),
    ([event("scoring", attempt=2, retries=1)], [event("cancelled")], State.CANCELLED, 2),
    ([event("waiting_retry", retries=3)], [event("cancelled")], State.CANCELLED, 1),
    # nothing of the same epoch but an answer follows it
    ([event("queued"), event("cancelled")], [event("generating")], State.CANCELLED, 1),
    ([event("queued"), event("cancelled")], [event("queued", attempt=2)], State.CANCELLED, 1),
    ([event("queued"), event("cancelled")], [event("regenerating", attempt=3, retries=2)], State.CANCELLED, 1),
    ([event("queued"), event("cancelled")], [event("waiting_retry", retries=1)], State.CANCELLED, 1),
    ([event("queued"), event("cancelled")], [event("failed", retries=4)], State.CANCELLED, 1),
    ([event("generating"), event("cancelled")], [event("completed")], State.COMPLETED, 1),
    # a new epoch (asked again) starts over; a cancel of an older epoch, or after the answer, is stale
    ([event("cancelled")], [event("queued", epoch=2)], State.PENDING, 1),
    ([event("queued", epoch=2)], [event("cancelled", epoch=1)], State.PENDING, 1),
    ([event("completed")], [event("cancelled")], State.COMPLETED, 1),
    # the order the events arrive in does not matter for the cancel itself
    ([event("cancelled"), event("cancelled")], [], State.CANCELLED, 1),
    ([], [event("cancelled"), event("queued")], State.CANCELLED, 1),
])
def test_a_cancel_ends_its_epoch_and_only_an_answer_follows_it(before, after, state, attempt):
    record = fold_all(before + after)
    assert (record["state"], record["attempt"]) == (state, attempt)


def test_a_redelivered_cancel_changes_nothing():
    record = fold_all([event("generating"), event("cancelled")])
    assert fold_status(record, event("cancelled", at=200.0)) is None


def test_a_cancel_changes_no_attempt_count():
    counts = fold_all([event("scoring", attempt=2)], fold=fold_attempts)
    assert fold_attempts(counts, event("cancelled")) is None


@pytest.mark.parametrize("events, epoch, expected", [
    ([event("queued"), event("cancelled")], 1, True),
    ([event("queued"), event("cancelled")], 2, False),
    ([event("cancelled"), event("queued", epoch=2)], 2, False),
    ([event("generating")], 1, False),
    ([], 1, False),
])
def test_is_cancelled(events, epoch, expected):
    assert is_cancelled(fold_all(events), epoch) is expected


def test_a_cancelled_question_expires_like_a_finished_one():
    record = fold_all([event("queued"), event("cancelled", at=100.0)])
    assert due_to_expire(record, now=200.0, retention=50.0)
