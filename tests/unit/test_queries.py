"""qastream.db.queries on a real SQLite file with the migrated schema."""

import pytest
from sqlalchemy import func, select

from qastream.db import queries, totals
from qastream.db.queries import CREATED, FOUND, IN_FLIGHT, RESUBMITTED, Failure, StoredAnswer, Submission
from qastream.db.schema import QuestionRow, ResponseRow
from qastream.errors import ErrorClass
from qastream.policy.lifecycle import State

Q = QuestionRow.__table__
R = ResponseRow.__table__
T0 = 1_700_000_000.0
#: Percentiles come from histogram buckets 2**(1/8) wide, reported at their geometric middle.
PRECISION = 2 ** (1 / 16) - 1


def write(engine, fn, *args):
    with engine.begin() as connection:
        return fn(connection, *args)


def read(engine, fn, *args):
    with engine.connect() as connection:
        return fn(connection, *args)


def qid(n):
    return f"{n:016x}"


def sub(n, at=T0, original_answer=None, text=None):
    return Submission(qid(n), text or f"question {n}", original_answer, at)


def answer(n, *, epoch=1, text="an answer", score=0.8, first_score=None, attempts=1, retries=0, total_ms=100.0,
           low_quality=False, at=T0 + 5, accepted_at=T0):
    return StoredAnswer(question_id=qid(n), question_text=f"question {n}", original_answer="ref",
                        accepted_at=accepted_at, epoch=epoch, answer=text, score=score,
                        first_score=score if first_score is None else first_score, processing_attempts=attempts,
                        error_retries=retries, total_processing_time_ms=total_ms, llm_time_ms=10.0,
                        low_quality=low_quality, model="smollm2", at=at)


def failure(n, *, epoch=1, at=T0 + 5, error_class="permanent", message="model not found"):
    return Failure(question_id=qid(n), question_text=f"question {n}", original_answer=None, accepted_at=T0,
                   epoch=epoch, error_class=error_class, error_message=message, at=at)


def count(engine, table, n=None):
    with engine.connect() as c:
        q = select(func.count()).select_from(table)
        if n is not None:
            q = q.where(table.c.question_id == qid(n))
        return c.execute(q).scalar()


# -- accept ----------------------------------------------------------------------------------------------

def test_new_question_is_created_pending(engine):
    [outcome] = write(engine, queries.accept, [sub(1, original_answer="ref")])
    assert (outcome.kind, outcome.question_id, outcome.status, outcome.epoch) == (CREATED, qid(1), State.PENDING, 1)
    assert (outcome.accepted_at, outcome.original_answer, outcome.result) == (T0, "ref", None)
    row = read(engine, queries.lookup, qid(1))
    assert (row["status"], row["epoch"], row["question_text"], row["accepted_at"]) == (State.PENDING, 1, "question 1", T0)


def test_enum_members_are_stored_as_their_plain_strings(engine):
    write(engine, queries.accept, [sub(1), sub(2)])
    write(engine, queries.save_failed, [failure(2, error_class=ErrorClass.SCORING)])
    with engine.connect() as c:
        rows = sorted(c.execute(select(Q.c.status, Q.c.error_class)).all())
    assert rows == [("failed", "scoring"), ("pending", None)]
    assert {type(v) for row in rows for v in row if v is not None} == {str}


def test_same_question_twice_in_one_batch(engine):
    first, second, other = write(engine, queries.accept, [sub(1), sub(1, at=T0 + 1), sub(2)])
    assert (first.kind, second.kind, other.kind) == (CREATED, IN_FLIGHT, CREATED)
    assert (second.epoch, second.accepted_at) == (1, T0)
    assert count(engine, Q) == 2


def test_in_flight_question_stays_in_flight(engine):
    write(engine, queries.accept, [sub(1)])
    [again] = write(engine, queries.accept, [sub(1, at=T0 + 10)])
    assert (again.kind, again.status, again.epoch, again.accepted_at) == (IN_FLIGHT, State.PENDING, 1, T0)
    assert read(engine, queries.lookup, qid(1))["epoch"] == 1


def test_in_flight_question_learns_a_reference_answer_it_lacked(engine):
    write(engine, queries.accept, [sub(1)])
    [again] = write(engine, queries.accept, [sub(1, original_answer="late ref")])
    assert again.kind == IN_FLIGHT and again.original_answer == "late ref"
    [third] = write(engine, queries.accept, [sub(1, original_answer="other ref")])
    assert third.original_answer == "late ref"   # the first reference is kept


def test_completed_question_is_found_with_its_result(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_completed, [answer(1, text="Kafka is a log.", score=0.91, attempts=2, retries=1,
                                                  total_ms=1234.5)])
    found, twice = write(engine, queries.accept, [sub(1, at=T0 + 100), sub(1, at=T0 + 101)])
    assert (found.kind, found.status, found.epoch, found.accepted_at) == (FOUND, State.COMPLETED, 1, T0)
    assert found.result == {
        "question_id": qid(1), "question_text": "question 1", "answer": "Kafka is a log.", "score": 0.91,
        "low_quality": False, "processing_attempts": 2, "error_retries": 1, "total_processing_time_ms": 1234.5,
        "model": "smollm2",
        "usage": {"prompt_tokens": 0, "eval_tokens": 0, "eval_ms": 0.0, "load_ms": 0.0, "wasted_tokens": 0,
                  "first_model": None},
    }
    assert twice == found   # a repeat of a found question in the same batch is found too


def test_failed_question_is_resubmitted_in_a_new_epoch(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_failed, [failure(1)])
    [outcome] = write(engine, queries.accept, [sub(1, at=T0 + 50, original_answer="ref")])
    assert (outcome.kind, outcome.status, outcome.epoch, outcome.accepted_at) == (RESUBMITTED, State.PENDING, 2, T0 + 50)
    row = read(engine, queries.lookup, qid(1))
    assert (row["status"], row["epoch"], row["accepted_at"]) == (State.PENDING, 2, T0 + 50)
    assert "error" not in row
    [again] = write(engine, queries.accept, [sub(1, at=T0 + 60)])
    assert (again.kind, again.epoch) == (IN_FLIGHT, 2)


def test_failed_question_twice_in_one_batch_is_resubmitted_once(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_failed, [failure(1)])
    first, second = write(engine, queries.accept, [sub(1, at=T0 + 50), sub(1, at=T0 + 51)])
    assert (first.kind, first.epoch) == (RESUBMITTED, 2)
    assert (second.kind, second.epoch) == (IN_FLIGHT, 2)
    assert read(engine, queries.lookup, qid(1))["epoch"] == 2


def test_outcomes_come_back_in_submission_order(engine):
    write(engine, queries.accept, [sub(2)])
    outcomes = write(engine, queries.accept, [sub(3), sub(2), sub(1)])
    assert [(o.question_id, o.kind) for o in outcomes] == [(qid(3), CREATED), (qid(2), IN_FLIGHT), (qid(1), CREATED)]


# -- save_completed --------------------------------------------------------------------------------------

def test_save_completed_twice_keeps_one_row(engine):
    write(engine, queries.accept, [sub(1)])
    assert [a.question_id for a in write(engine, queries.save_completed, [answer(1, text="first")])] == [qid(1)]
    written = write(engine, queries.save_completed, [answer(1, text="second", score=0.95)])
    assert [a.answer for a in written] == ["second"]
    assert count(engine, R, 1) == 1
    assert count(engine, Q, 1) == 1
    result = read(engine, queries.lookup, qid(1))["result"]
    assert (result["answer"], result["score"]) == ("second", 0.95)


def test_save_completed_duplicate_in_one_batch_keeps_one_row(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_completed, [answer(1, text="a"), answer(1, text="b")])
    assert count(engine, R, 1) == 1


def test_save_completed_marks_the_question_completed(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_completed, [answer(1, at=T0 + 7)])
    row = read(engine, queries.lookup, qid(1))
    assert (row["status"], row["epoch"], row["updated_at"]) == (State.COMPLETED, 1, T0 + 7)
    assert row["result"]["answer"] == "an answer"


def test_stale_epoch_answer_is_skipped(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_failed, [failure(1)])
    write(engine, queries.accept, [sub(1, at=T0 + 50)])            # epoch 2, pending
    assert write(engine, queries.save_completed, [answer(1, epoch=1, text="late")]) == []
    row = read(engine, queries.lookup, qid(1))
    assert (row["status"], row["epoch"]) == (State.PENDING, 2)
    assert count(engine, R, 1) == 0


def test_stale_epoch_is_skipped_but_fresh_ones_in_the_batch_are_written(engine):
    write(engine, queries.accept, [sub(1), sub(2)])
    write(engine, queries.save_failed, [failure(1)])
    write(engine, queries.accept, [sub(1, at=T0 + 50)])
    written = write(engine, queries.save_completed, [answer(1, epoch=1), answer(2, epoch=1)])
    assert [a.question_id for a in written] == [qid(2)]


def test_older_epoch_answer_does_not_replace_a_newer_completed_one(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_failed, [failure(1)])
    write(engine, queries.accept, [sub(1, at=T0 + 50)])
    write(engine, queries.save_completed, [answer(1, epoch=2, text="new")])
    assert write(engine, queries.save_completed, [answer(1, epoch=1, text="old")]) == []
    row = read(engine, queries.lookup, qid(1))
    assert (row["epoch"], row["result"]["answer"]) == (2, "new")


def test_answer_for_a_never_accepted_question_creates_the_question(engine):
    written = write(engine, queries.save_completed, [answer(9, epoch=3, accepted_at=T0 - 10)])
    assert [a.question_id for a in written] == [qid(9)]
    row = read(engine, queries.lookup, qid(9))
    assert (row["status"], row["epoch"], row["question_text"], row["accepted_at"]) == (
        State.COMPLETED, 3, "question 9", T0 - 10)
    assert row["result"]["answer"] == "an answer"


# -- save_failed -----------------------------------------------------------------------------------------

def test_save_failed_marks_the_question_failed_with_its_error(engine):
    write(engine, queries.accept, [sub(1)])
    assert len(write(engine, queries.save_failed, [failure(1, error_class="overload", message="gave up")])) == 1
    row = read(engine, queries.lookup, qid(1))
    assert row["status"] == State.FAILED
    assert row["error"] == {"class": "overload", "message": "gave up"}
    assert "result" not in row


def test_save_failed_does_not_override_a_completed_question_of_the_same_epoch(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_completed, [answer(1)])
    assert write(engine, queries.save_failed, [failure(1, epoch=1)]) == []
    row = read(engine, queries.lookup, qid(1))
    assert row["status"] == State.COMPLETED and "error" not in row


def test_save_failed_of_an_older_epoch_is_skipped(engine):
    write(engine, queries.accept, [sub(1)])
    write(engine, queries.save_failed, [failure(1)])
    write(engine, queries.accept, [sub(1, at=T0 + 50)])
    assert write(engine, queries.save_failed, [failure(1, epoch=1)]) == []
    assert read(engine, queries.lookup, qid(1))["status"] == State.PENDING


def test_save_failed_for_a_never_accepted_question_creates_it(engine):
    assert len(write(engine, queries.save_failed, [failure(4)])) == 1
    assert read(engine, queries.lookup, qid(4))["status"] == State.FAILED


def test_long_error_message_is_truncated(engine):
    write(engine, queries.save_failed, [failure(4, message="x" * 5000)])
    assert len(read(engine, queries.lookup, qid(4))["error"]["message"]) == 2000


# -- lookup ----------------------------------------------------------------------------------------------

def test_lookup_unknown_question_is_none(engine):
    assert read(engine, queries.lookup, qid(123)) is None


def test_lookup_pending_question(engine):
    write(engine, queries.accept, [sub(1, at=T0 + 0.25)])
    assert read(engine, queries.lookup, qid(1)) == {
        "question_id": qid(1), "status": State.PENDING, "epoch": 1, "question_text": "question 1",
        "accepted_at": T0 + 0.25, "updated_at": T0 + 0.25}


# -- metrics ---------------------------------------------------------------------------------------------

def test_metrics_of_an_empty_database(engine):
    assert read(engine, totals.read) == {
        "total_responses": 0, "scored_responses": 0, "average_score": None, "low_quality_responses": 0,
        "attempts_distribution": {},
        "score_distribution": {"<0.10": 0, "0.10-0.20": 0, "0.20-0.30": 0, "0.30-0.40": 0, "0.40-0.50": 0,
                               "0.50-0.60": 0, "0.60-0.70": 0, "0.70-0.80": 0,
                               "0.80-0.90": 0, ">=0.90": 0},
        "questions_by_status": {}, "batches_by_status": {},
        "dead_letters": 0, "dead_letters_by_class": {}, "error_retries_of_completed": 0,
        "processing_time_ms": {"p50": None, "p95": None, "p99": None},
        "tokens": {"prompt_tokens": 0, "eval_tokens": 0, "wasted_tokens": 0, "tokens_per_answer": None,
                   "eval_tokens_per_second": None},
    }


def test_metrics_aggregates(engine):
    scores = [0.2, 0.5, 0.55, 0.6, 0.7, 0.72, 0.75, 0.85, 0.9, None]
    attempts = [3, 3, 2, 1, 1, 1, 1, 1, 1, 1]
    write(engine, queries.accept, [sub(n) for n in range(13)])
    write(engine, queries.save_completed, [
        answer(n, score=s, attempts=a, total_ms=float((n + 1) * 100), low_quality=n < 2)
        for n, (s, a) in enumerate(zip(scores, attempts))])
    write(engine, queries.save_failed, [failure(10), failure(11)])
    m = read(engine, totals.read)
    assert m["total_responses"] == 10
    assert m["scored_responses"] == 9
    assert m["average_score"] == round(sum(s for s in scores if s is not None) / 9, 4)
    assert m["low_quality_responses"] == 2
    assert m["attempts_distribution"] == {"1": 7, "2": 1, "3": 2}
    # Lower edges are inclusive: 0.2 goes to 0.20-0.30, 0.5 to 0.50-0.60, 0.9 to >=0.90.
    assert m["score_distribution"] == {"<0.10": 0, "0.10-0.20": 0, "0.20-0.30": 1, "0.30-0.40": 0,
                                       "0.40-0.50": 0, "0.50-0.60": 2, "0.60-0.70": 1, "0.70-0.80": 3,
                                       "0.80-0.90": 1, ">=0.90": 1}
    assert m["questions_by_status"] == {State.COMPLETED: 10, State.FAILED: 2, State.PENDING: 1}
    assert (m["dead_letters"], m["dead_letters_by_class"]) == (2, {"permanent": 2})
    # Nearest rank over 100, 200, ..., 1000 ms, within the histogram's precision.
    assert m["processing_time_ms"] == pytest.approx({"p50": 500.0, "p95": 1000.0, "p99": 1000.0}, rel=PRECISION)


@pytest.mark.parametrize("n, p50, p95, p99", [
    (1, 7.0, 7.0, 7.0),
    (2, 7.0, 14.0, 14.0),
    (20, 70.0, 133.0, 140.0),
    (100, 350.0, 665.0, 693.0),
])
def test_processing_time_percentiles_use_nearest_rank(engine, n, p50, p95, p99):
    write(engine, queries.save_completed, [answer(i, total_ms=7.0 * (i + 1)) for i in reversed(range(n))])
    got = read(engine, totals.read)["processing_time_ms"]
    assert got == pytest.approx({"p50": p50, "p95": p95, "p99": p99}, rel=PRECISION)


def test_metrics_count_rewritten_answers_once(engine):
    write(engine, queries.save_completed, [answer(1, score=0.2)])
    write(engine, queries.save_completed, [answer(1, score=0.8)])
    m = read(engine, totals.read)
    assert (m["total_responses"], m["average_score"]) == (1, 0.8)
    assert m["score_distribution"]["0.80-0.90"] == 1
    assert m["score_distribution"]["0.20-0.30"] == 0


def test_resubmit_starts_a_new_epoch_once(engine):
    write(engine, queries.accept, [sub(1), sub(2)])
    write(engine, queries.save_failed, [failure(1)])
    taken = write(engine, lambda c: queries.resubmit(c, T0 + 50, statuses=[State.FAILED]))
    assert [(a.question_id, a.epoch, a.question_text) for a in taken] == [(qid(1), 2, "question 1")]
    # Taken already: a second replay finds nothing to take.
    assert write(engine, lambda c: queries.resubmit(c, T0 + 60, statuses=[State.FAILED])) == []
    assert read(engine, queries.lookup, qid(1))["status"] == State.PENDING


def test_pending_before_and_requeue_of_old_pending_questions(engine):
    write(engine, queries.accept, [sub(1)])
    assert read(engine, queries.pending_before, T0 - 1) == []
    assert read(engine, queries.pending_before, T0 + 1) == [qid(1)]
    taken = write(engine, lambda c: queries.resubmit(c, T0 + 2, statuses=[State.PENDING], accepted_before=T0 + 1))
    assert [a.epoch for a in taken] == [2]
    # The new acceptance time moves it out of "accepted before".
    assert read(engine, queries.pending_before, T0 + 1) == []


def test_failed_lists_dead_letters_with_their_reason(engine):
    write(engine, queries.accept, [sub(1), sub(2)])
    write(engine, queries.save_failed, [failure(2, message="permanent (404): model not found")])
    (entry,) = read(engine, queries.failed)
    assert entry["question_id"] == qid(2) and "model not found" in entry["reason"]


# -- an enqueue that timed out (issue 11): reconciliation and a late delivery of the first send ----------


def test_a_late_first_epoch_answer_after_reconciliation_is_skipped_and_the_new_epoch_is_stored(engine):
    write(engine, queries.accept, [sub(1)])                         # stored, the send timed out
    taken = write(engine, lambda c: queries.resubmit(c, T0 + 40, statuses=[State.PENDING], question_ids=[qid(1)]))
    assert [(a.question_id, a.epoch) for a in taken] == [(qid(1), 2)]
    assert write(engine, queries.save_completed, [answer(1, epoch=1, text="late")]) == []   # the late send
    assert [a.epoch for a in write(engine, queries.save_completed, [answer(1, epoch=2, text="new")])] == [2]
    row = read(engine, queries.lookup, qid(1))
    assert (row["status"], row["epoch"], row["result"]["answer"]) == (State.COMPLETED, 2, "new")
    assert count(engine, R, 1) == 1


def test_a_late_first_epoch_answer_before_reconciliation_leaves_nothing_to_reconcile(engine):
    write(engine, queries.accept, [sub(1)])
    assert len(write(engine, queries.save_completed, [answer(1, epoch=1)])) == 1
    assert write(engine, lambda c: queries.resubmit(c, T0 + 40, statuses=[State.PENDING], question_ids=[qid(1)])) == []
    assert read(engine, queries.lookup, qid(1))["epoch"] == 1
