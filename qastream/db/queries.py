"""The statements qastream runs, as plain synchronous functions on a connection.

They are called from a worker thread by :class:`qastream.services.storage.Storage`
and directly by unit tests on SQLite.  Every write is keyed by
``question_id`` and guarded by the question's ``epoch`` (its submission
number), so a redelivered or late event neither duplicates a row nor
overwrites the outcome of a newer submission.

Each write also adds what it changed to the running totals of
:mod:`qastream.db.totals` in its own transaction, counting only the rows it
actually inserted or changed, so a redelivered or stale event counts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, Table, and_, bindparam, select, update

from qastream.db import owners, stats
from qastream.db.schema import QuestionRow, ResponseRow
from qastream.db.totals import count
from qastream.db.upsert import insert_for
from qastream.policy.access import Principal
from qastream.policy.lifecycle import State
from qastream.policy.usage import Usage

Q: Table = QuestionRow.__table__  # type: ignore[assignment]  # declarative tables are Tables
R: Table = ResponseRow.__table__  # type: ignore[assignment]

CREATED = "created"
RESUBMITTED = "resubmitted"
IN_FLIGHT = "in_flight"
FOUND = "found"

#: The ``responses`` columns the running totals count (see :func:`stats.add_response`).
COUNTED = ("question_id", "bert_score", "low_quality", "error_retries", "processing_attempts",
           "total_processing_time_ms", "prompt_tokens", "eval_tokens", "eval_ms", "wasted_tokens")


@dataclass(frozen=True)
class Submission:
    """A question as ``POST /query`` received it, with the key that asked it (``None`` without access control)."""

    question_id: str
    question_text: str
    original_answer: Optional[str]
    at: float
    owner: Optional[Principal] = None
    #: Where to announce the question's end (already checked); ``None`` for no webhook.
    webhook_url: Optional[str] = None


@dataclass(frozen=True)
class Acceptance:
    """What accepting a submission did.

    ``kind`` is ``created`` (new question), ``resubmitted`` (a failed
    question starts a new epoch), ``in_flight`` (already being processed) or
    ``found`` (already completed; ``result`` holds the answer).
    """

    kind: str
    question_id: str
    status: str
    epoch: int
    accepted_at: float
    original_answer: Optional[str]
    result: Optional[dict[str, Any]] = None
    question_text: Optional[str] = None


@dataclass(frozen=True)
class Answer:
    """A completed question's answer and how it was reached: what a ``responses`` row holds."""

    question_id: str
    question_text: str
    original_answer: Optional[str]
    answer: str
    score: Optional[float]
    first_score: Optional[float]
    processing_attempts: int
    error_retries: int
    total_processing_time_ms: float
    llm_time_ms: float
    low_quality: bool
    model: Optional[str]
    at: float                     # when it completed, epoch seconds
    #: What the LLM spent on it; keyword-only with a default, so imports of older exports need none.
    usage: Usage = field(default_factory=Usage, kw_only=True)


@dataclass(frozen=True)
class StoredAnswer(Answer):
    """An answer the store stage writes, with the acceptance it answers."""

    accepted_at: float
    epoch: int


def response_values(a: Answer) -> dict[str, Any]:
    """The ``responses`` row of an answer, for the store stage and for imports alike."""
    return {
        "question_id": a.question_id, "answer": a.answer, "bert_score": a.score, "first_score": a.first_score,
        "processing_attempts": a.processing_attempts, "error_retries": a.error_retries,
        "total_processing_time_ms": a.total_processing_time_ms, "llm_time_ms": a.llm_time_ms,
        "low_quality": a.low_quality, "model": a.model, "created_at": to_datetime(a.at),
        "updated_at": to_datetime(a.at), "prompt_tokens": a.usage.prompt_tokens, "eval_tokens": a.usage.eval_tokens,
        "eval_ms": a.usage.eval_ms, "load_ms": a.usage.load_ms, "wasted_tokens": a.usage.wasted_tokens,
        "first_model": a.usage.first_model,
    }


@dataclass(frozen=True)
class Failure:
    """A question that ended in the dead-letter topic."""

    question_id: str
    question_text: str
    original_answer: Optional[str]
    accepted_at: float
    epoch: int
    error_class: str
    error_message: str
    at: float


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def to_seconds(value: datetime) -> float:
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written in UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def result_from_row(row: Any) -> dict[str, Any]:
    return {
        "question_id": row.question_id,
        "question_text": row.question_text,
        "answer": row.answer,
        "score": row.bert_score,
        "low_quality": bool(row.low_quality),
        "processing_attempts": row.processing_attempts,
        "error_retries": row.error_retries,
        "total_processing_time_ms": row.total_processing_time_ms,
        "model": row.model,
        "usage": Usage(prompt_tokens=row.prompt_tokens, eval_tokens=row.eval_tokens, eval_ms=row.eval_ms,
                       load_ms=row.load_ms, wasted_tokens=row.wasted_tokens, first_model=row.first_model).as_dict(),
    }


JOINED = select(
    Q.c.question_id, Q.c.question_text, Q.c.original_answer, Q.c.status, Q.c.epoch, Q.c.accepted_at,
    Q.c.updated_at, Q.c.error_class, Q.c.error_message,
    R.c.answer, R.c.bert_score, R.c.low_quality, R.c.processing_attempts, R.c.error_retries,
    R.c.total_processing_time_ms, R.c.model, R.c.prompt_tokens, R.c.eval_tokens, R.c.eval_ms, R.c.load_ms,
    R.c.wasted_tokens, R.c.first_model,
).select_from(Q.outerjoin(R, R.c.question_id == Q.c.question_id))


def accept(connection: Connection, submissions: Sequence[Submission]) -> list[Acceptance]:
    """Record submissions; one :class:`Acceptance` per submission, in order.

    A new question is inserted as pending; a failed or cancelled one is reset
    to pending in a new epoch; anything else is reported as it is.  Concurrent workers
    accepting the same new question race on the primary key: only the one
    whose insert returns the row enqueues it.
    """
    ids = list({s.question_id for s in submissions})
    deltas = stats.new_deltas()
    existing = {row.question_id: row for row in connection.execute(JOINED.where(Q.c.question_id.in_(ids)))}
    outcomes: list[Acceptance] = []
    new_rows: dict[str, dict[str, Any]] = {}
    decided: dict[str, Acceptance] = {}
    for sub in submissions:
        if sub.question_id in decided:  # the same question twice in one batch
            first = decided[sub.question_id]
            outcomes.append(first if first.kind == FOUND else
                            Acceptance(IN_FLIGHT, first.question_id, first.status, first.epoch,
                                       first.accepted_at, first.original_answer))
            continue
        row = existing.get(sub.question_id)
        if row is None:
            new_rows[sub.question_id] = {
                "question_id": sub.question_id, "question_text": sub.question_text,
                "original_answer": sub.original_answer, "status": State.PENDING, "epoch": 1,
                "accepted_at": to_datetime(sub.at), "updated_at": to_datetime(sub.at), "webhook_url": sub.webhook_url,
            }
            outcome = Acceptance(CREATED, sub.question_id, State.PENDING, 1, sub.at, sub.original_answer)
        elif row.status == State.COMPLETED:
            outcome = Acceptance(FOUND, row.question_id, State.COMPLETED, row.epoch, to_seconds(row.accepted_at),
                                 row.original_answer, result_from_row(row))
        elif row.status in (State.FAILED, State.CANCELLED):  # asked again: it starts over in a new epoch
            reference = row.original_answer or sub.original_answer
            changed = connection.execute(
                update(Q).where(and_(Q.c.question_id == row.question_id, Q.c.epoch == row.epoch,
                                     Q.c.status == row.status))
                .values(status=State.PENDING, epoch=row.epoch + 1, accepted_at=to_datetime(sub.at), updated_at=to_datetime(sub.at),
                        original_answer=reference, error_class=None, error_message=None, webhook_url=sub.webhook_url)
            ).rowcount
            kind = RESUBMITTED if changed else IN_FLIGHT
            if changed:
                stats.add_transition(deltas, (row.status, row.error_class), (State.PENDING, None))
                stats.add(deltas, stats.ACCEPTED, stats.minute_key(sub.at))
            outcome = Acceptance(kind, row.question_id, State.PENDING, row.epoch + 1, sub.at, reference)
        else:
            if row.original_answer is None and sub.original_answer:
                connection.execute(update(Q).where(Q.c.question_id == row.question_id)
                                   .values(original_answer=sub.original_answer))
            if sub.webhook_url is not None:  # announce the end there too: the latest submission's URL wins
                connection.execute(update(Q).where(Q.c.question_id == row.question_id)
                                   .values(webhook_url=sub.webhook_url))
            outcome = Acceptance(IN_FLIGHT, row.question_id, row.status, row.epoch, to_seconds(row.accepted_at),
                                 row.original_answer or sub.original_answer)
        decided[sub.question_id] = outcome
        outcomes.append(outcome)
    if new_rows:
        inserted = {
            r.question_id for r in connection.execute(
                insert_for(connection, Q).on_conflict_do_nothing(index_elements=["question_id"])
                .returning(Q.c.question_id),
                list(new_rows.values()),
            )
        }
        for question_id in inserted:
            stats.add_transition(deltas, None, (State.PENDING, None))
            stats.add(deltas, stats.ACCEPTED, stats.minute_key(to_seconds(new_rows[question_id]["accepted_at"])))
        lost = set(new_rows) - inserted  # another worker inserted them first
        if lost:
            outcomes = [Acceptance(IN_FLIGHT, o.question_id, State.PENDING, o.epoch, o.accepted_at, o.original_answer)
                        if o.kind == CREATED and o.question_id in lost else o for o in outcomes]
    count(connection, deltas)
    return outcomes


Current = dict[str, tuple[int, str, Optional[str]]]


def _locked(connection: Connection, ids: Sequence[str]) -> Current:
    """Epoch, status and error class of questions, locked until commit on PostgreSQL.

    The lock (ids sorted, so two workers lock in one order) makes what this
    transaction reads next, the old ``responses`` rows, the committed state a
    concurrent writer of the same question left, so the totals move once.
    """
    rows = connection.execute(select(Q.c.question_id, Q.c.epoch, Q.c.status, Q.c.error_class)
                              .where(Q.c.question_id.in_(sorted(ids))).order_by(Q.c.question_id).with_for_update())
    return {r.question_id: (r.epoch, r.status, r.error_class) for r in rows}


def _current_epochs(connection: Connection, items: Sequence[StoredAnswer | Failure], deltas: stats.Deltas) -> Current:
    """Epoch, status and class of each item's question, inserting rows for questions never accepted."""
    current = _locked(connection, [i.question_id for i in items])
    missing = {i.question_id: i for i in items if i.question_id not in current}
    if missing:
        inserted = {r.question_id for r in connection.execute(
            insert_for(connection, Q).on_conflict_do_nothing(index_elements=["question_id"]).returning(Q.c.question_id),
            [{"question_id": i.question_id, "question_text": i.question_text, "original_answer": i.original_answer,
              "status": State.PENDING, "epoch": i.epoch, "accepted_at": to_datetime(i.accepted_at),
              "updated_at": to_datetime(i.at)} for i in missing.values()])}
        for question_id in inserted:
            stats.add_transition(deltas, None, (State.PENDING, None))
            stats.add(deltas, stats.ACCEPTED, stats.minute_key(missing[question_id].accepted_at))
        current.update({qid: (missing[qid].epoch, State.PENDING, None) for qid in inserted})
        current.update(_locked(connection, list(set(missing) - inserted)))  # another worker inserted them first
    return current


def save_completed(connection: Connection, answers: Sequence[StoredAnswer]) -> list[StoredAnswer]:
    """Upsert answers and mark their questions completed; returns the ones written.

    An answer from an older epoch than the question's current one is stale
    and skipped.  An answer for a question nobody accepted (a message written
    straight to a topic) creates the question row too.
    """
    deltas = stats.new_deltas()
    current = _current_epochs(connection, answers, deltas)
    fresh = [a for a in answers if a.epoch >= current[a.question_id][0]]
    if not fresh:
        count(connection, deltas)
        return []
    rows = [response_values(a) for a in fresh]
    old = {r.question_id: r._asdict() for r in connection.execute(
        select(*[R.c[c] for c in COUNTED]).where(R.c.question_id.in_([a.question_id for a in fresh])))}
    for a, row in zip(fresh, rows):
        if a.question_id in old:  # a redelivered or regenerated answer replaces the one counted
            stats.add_response(deltas, old[a.question_id], -1)
        else:
            stats.add(deltas, stats.COMPLETED, stats.minute_key(a.at))
        stats.add_response(deltas, row, 1)
        old[a.question_id] = row
        epoch, status, error_class = current[a.question_id]
        stats.add_transition(deltas, (status, error_class), (State.COMPLETED, None))
        current[a.question_id] = (a.epoch, State.COMPLETED, None)
    statement = insert_for(connection, R)
    updatable = {c: statement.excluded[c] for c in rows[0] if c not in ("question_id", "created_at")}
    connection.execute(statement.on_conflict_do_update(index_elements=["question_id"], set_=updatable), rows)
    connection.execute(
        update(Q).where(Q.c.question_id == bindparam("qid")).values(
            status=State.COMPLETED, epoch=bindparam("epoch"), updated_at=bindparam("at"), error_class=None, error_message=None),
        [{"qid": a.question_id, "epoch": a.epoch, "at": to_datetime(a.at)} for a in fresh],
    )
    owners.close(connection, [a.question_id for a in fresh])
    count(connection, deltas)
    return fresh


def save_failed(connection: Connection, failures: Sequence[Failure]) -> list[Failure]:
    """Mark questions failed unless a newer epoch, a completion or a cancellation already superseded them.

    A cancelled question stays cancelled when the call that was in flight
    fails: only an answer (``save_completed``) ends it otherwise.
    """
    deltas = stats.new_deltas()
    current = _current_epochs(connection, failures, deltas)
    fresh = [f for f in failures
             if f.epoch >= current[f.question_id][0]
             and not (f.epoch == current[f.question_id][0]
                      and current[f.question_id][1] in (State.COMPLETED, State.CANCELLED))]
    for f in fresh:
        epoch, status, error_class = current[f.question_id]
        if status != State.FAILED:
            stats.add(deltas, stats.FAILED, stats.minute_key(f.at))
        stats.add_transition(deltas, (status, error_class), (State.FAILED, f.error_class))
        current[f.question_id] = (epoch, State.FAILED, f.error_class)
    if fresh:
        connection.execute(
            update(Q).where(Q.c.question_id == bindparam("qid")).values(
                status=State.FAILED, updated_at=bindparam("at"), error_class=bindparam("cls"), error_message=bindparam("msg")),
            [{"qid": f.question_id, "at": to_datetime(f.at), "cls": f.error_class, "msg": f.error_message[:2000]}
             for f in fresh],
        )
        owners.close(connection, [f.question_id for f in fresh])
    count(connection, deltas)
    return fresh


def resubmit(connection: Connection, now: float, *, statuses: Sequence[str],
             question_ids: Optional[Sequence[str]] = None, accepted_before: Optional[float] = None,
             limit: Optional[int] = None) -> list[Acceptance]:
    """Start a new epoch for matching questions, ready to be enqueued again.

    Used to replay dead letters (``statuses=[failed]``) and to re-enqueue
    pending questions whose messages were lost (``statuses=[pending]``).  The
    new epoch makes every message of the old one stale, so an old message
    still in flight is skipped instead of answered twice.  Each update is
    guarded by the epoch it read, so two workers never both take a question.
    """
    query = select(Q.c.question_id, Q.c.question_text, Q.c.original_answer, Q.c.epoch, Q.c.status, Q.c.error_class) \
        .where(Q.c.status.in_(list(statuses))).order_by(Q.c.accepted_at)
    if question_ids is not None:
        query = query.where(Q.c.question_id.in_(list(question_ids)))
    if accepted_before is not None:
        query = query.where(Q.c.accepted_at < to_datetime(accepted_before))
    if limit is not None:
        query = query.limit(limit)
    taken = []
    deltas = stats.new_deltas()
    for row in connection.execute(query).all():
        changed = connection.execute(
            update(Q).where(and_(Q.c.question_id == row.question_id, Q.c.epoch == row.epoch,
                                 Q.c.status == row.status))
            .values(status=State.PENDING, epoch=row.epoch + 1, accepted_at=to_datetime(now), updated_at=to_datetime(now),
                    error_class=None, error_message=None)
        ).rowcount
        if changed:
            stats.add_transition(deltas, (row.status, row.error_class), (State.PENDING, None))
            stats.add(deltas, stats.ACCEPTED, stats.minute_key(now))
            taken.append(Acceptance(RESUBMITTED, row.question_id, State.PENDING, row.epoch + 1, now,
                                    row.original_answer, question_text=row.question_text))
    count(connection, deltas)
    return taken


def pending_before(connection: Connection, before: float, limit: int = 1000) -> list[str]:
    """Ids of pending questions accepted before ``before``, oldest first."""
    return list(connection.execute(
        select(Q.c.question_id).where(and_(Q.c.status == State.PENDING, Q.c.accepted_at < to_datetime(before)))
        .order_by(Q.c.accepted_at).limit(limit)).scalars())


def failed(connection: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered questions, newest first."""
    rows = connection.execute(
        select(Q.c.question_id, Q.c.question_text, Q.c.epoch, Q.c.error_class, Q.c.error_message, Q.c.updated_at)
        .where(Q.c.status == State.FAILED).order_by(Q.c.updated_at.desc()).limit(limit))
    return [{"question_id": r.question_id, "question_text": r.question_text, "epoch": r.epoch,
             "error_class": r.error_class, "reason": r.error_message, "failed_at": to_seconds(r.updated_at)}
            for r in rows]


def lookup(connection: Connection, question_id: str) -> Optional[dict[str, Any]]:
    """A question's row as ``GET /status`` shows it, or ``None``."""
    row = connection.execute(JOINED.where(Q.c.question_id == question_id)).first()
    if row is None:
        return None
    record: dict[str, Any] = {
        "question_id": row.question_id, "status": row.status, "epoch": row.epoch,
        "question_text": row.question_text, "accepted_at": to_seconds(row.accepted_at),
        "updated_at": to_seconds(row.updated_at),
    }
    if row.status == State.COMPLETED and row.answer is not None:
        record["result"] = result_from_row(row)
    if row.status == State.FAILED:
        record["error"] = {"class": row.error_class, "message": row.error_message}
    return record
