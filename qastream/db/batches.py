"""The statements on ``batches`` and ``batch_items``, and cancellation of questions.

Every read of a batch is bounded by the batch: its row by primary key, its
items by the (batch, line) primary key, joined to ``questions`` and
``responses`` by theirs.  A batch's items are accepted in chunks, each in
one transaction with the acceptance of its questions
(:func:`qastream.db.inflight.accept`), so an item never points at a question
that was not stored.

Cancelling sets ``questions.status`` to ``cancelled`` for questions still
``pending`` (the database's one non-terminal status), in their current
epoch, and closes their owners' rows: a cancelled question is no longer in
flight for its key's bound, and reconciliation, which only looks at pending
questions, never re-enqueues it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, Table, and_, func, select, update

from qastream.db import inflight, owners, stats
from qastream.db.keys import K
from qastream.db.queries import Acceptance, Q, R, Submission, to_datetime, to_seconds
from qastream.db.schema import BatchItemRow, BatchRow
from qastream.db.totals import count
from qastream.policy.batches import FINISHED, BatchStatus, RequestCounts, after_cancel, fold_counts
from qastream.policy.lifecycle import State

B: Table = BatchRow.__table__  # type: ignore[assignment]  # declarative tables are Tables
BI: Table = BatchItemRow.__table__  # type: ignore[assignment]

#: Longest list of ids one statement binds (SQLite allows 32,766 variables; PostgreSQL plans short lists better).
ID_CHUNK = 1000


@dataclass(frozen=True)
class NewBatch:
    """A batch as ``POST /batches`` creates it."""

    batch_id: str
    total: int
    at: float
    metadata: Optional[dict[str, Any]]
    webhook_url: Optional[str]
    owner_key_id: Optional[int]


@dataclass(frozen=True)
class Item:
    """One valid line of a batch and the submission it makes."""

    line: int
    custom_id: Optional[str]
    submission: Submission


@dataclass(frozen=True)
class Batch:
    """A ``batches`` row, times in epoch seconds."""

    batch_id: str
    status: str
    total: int
    created_at: float
    updated_at: float
    finished_at: Optional[float]
    cancelled_at: Optional[float]
    metadata: Optional[dict[str, Any]]
    webhook_url: Optional[str]
    notified_at: Optional[float]
    owner_key_id: Optional[int]


@dataclass(frozen=True)
class Cancelled:
    """A question this cancel moved from pending to cancelled: what its status event needs."""

    question_id: str
    epoch: int
    accepted_at: float


def _seconds(value: Any) -> Optional[float]:
    return None if value is None else to_seconds(value)


def batch_of(row: Any) -> Batch:
    return Batch(batch_id=row.batch_id, status=row.status, total=row.total, created_at=to_seconds(row.created_at),
                 updated_at=to_seconds(row.updated_at), finished_at=_seconds(row.finished_at),
                 cancelled_at=_seconds(row.cancelled_at), metadata=json.loads(row.metadata) if row.metadata else None,
                 webhook_url=row.webhook_url, notified_at=_seconds(row.notified_at), owner_key_id=row.owner_key_id)


def _move(deltas: stats.Deltas, old: Optional[str], new: str) -> None:
    """Count a batch moving from ``old`` (``None``: created) to ``new`` in the running totals."""
    if old is not None:
        stats.add(deltas, stats.BATCHES, old, -1)
    stats.add(deltas, stats.BATCHES, new)


def create(connection: Connection, batch: NewBatch) -> None:
    """Insert the batch, in progress, and count it."""
    at = to_datetime(batch.at)
    # ensure_ascii: the JSON is ASCII, so a lone surrogate in the metadata is stored as its escape.
    metadata = json.dumps(batch.metadata, ensure_ascii=True) if batch.metadata is not None else None
    connection.execute(B.insert().values(
        batch_id=batch.batch_id, status=BatchStatus.IN_PROGRESS, total=batch.total, created_at=at, updated_at=at,
        metadata=metadata, webhook_url=batch.webhook_url, owner_key_id=batch.owner_key_id))
    deltas = stats.new_deltas()
    _move(deltas, None, BatchStatus.IN_PROGRESS)
    count(connection, deltas)


def accept_items(connection: Connection, batch_id: str, items: Sequence[Item]) -> list[Acceptance]:
    """Accept the items' questions as ``POST /query`` does and record the items; one acceptance per item."""
    outcomes = inflight.accept(connection, [item.submission for item in items])
    if items:
        connection.execute(BI.insert(), [{"batch_id": batch_id, "line": item.line, "custom_id": item.custom_id,
                                         "question_id": item.submission.question_id} for item in items])
    return outcomes


def shrink(connection: Connection, batch_id: str) -> int:
    """Set the batch's total to the items it holds (its acceptance stopped part way); returns the new total."""
    stored = connection.execute(select(func.count()).select_from(BI).where(BI.c.batch_id == batch_id)).scalar_one()
    connection.execute(update(B).where(B.c.batch_id == batch_id).values(total=stored))
    return int(stored)


def get(connection: Connection, batch_id: str) -> Optional[Batch]:
    """The batch, or ``None``."""
    row = connection.execute(select(B).where(B.c.batch_id == batch_id)).first()
    return batch_of(row) if row is not None else None


def latest(connection: Connection, limit: int, owner: Optional[int] = None) -> list[Batch]:
    """The newest batches first (only key ``owner``'s, when given)."""
    query = select(B).order_by(B.c.created_at.desc(), B.c.batch_id.desc()).limit(limit)
    if owner is not None:
        query = query.where(B.c.owner_key_id == owner)
    return [batch_of(row) for row in connection.execute(query)]


def _items_joined(batch_id: str) -> Any:
    return (BI.outerjoin(Q, Q.c.question_id == BI.c.question_id).outerjoin(R, R.c.question_id == BI.c.question_id),
            BI.c.batch_id == batch_id)


def counts(connection: Connection, batch: Batch) -> RequestCounts:
    """The batch's counts, read from its items joined to their questions and answers (bounded by the batch)."""
    joined, where = _items_joined(batch.batch_id)
    rows = connection.execute(select(Q.c.status, R.c.low_quality).select_from(joined).where(where))
    return fold_counts(batch.total, ((r.status, r.low_quality) for r in rows))


def results(connection: Connection, batch_id: str, after_line: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` result lines of the batch after line ``after_line``, in line order (a keyset page)."""
    joined, where = _items_joined(batch_id)
    rows = connection.execute(
        select(BI.c.line, BI.c.custom_id, BI.c.question_id, Q.c.status, Q.c.error_class, Q.c.error_message,
               R.c.answer, R.c.bert_score, R.c.processing_attempts, R.c.low_quality)
        .select_from(joined).where(and_(where, BI.c.line > after_line)).order_by(BI.c.line).limit(limit))
    out = []
    for r in rows:
        answered = r.status == State.COMPLETED and r.answer is not None
        error = None
        if r.status == State.FAILED:
            error = f"{r.error_class}: {r.error_message}" if r.error_message else (r.error_class or "failed")
        elif r.status == State.CANCELLED:
            error = "cancelled before it was generated"
        out.append({"line": r.line, "custom_id": r.custom_id, "question_id": r.question_id, "status": r.status,
                    "answer": r.answer if answered else None, "score": r.bert_score if answered else None,
                    "attempts": r.processing_attempts if answered else None,
                    "low_quality": bool(r.low_quality) if answered else None, "error": error})
    return out


def cancel_questions(connection: Connection, question_ids: Sequence[str], now: float) -> list[Cancelled]:
    """Cancel the questions among ``question_ids`` still pending; returns those this call cancelled.

    Rows are locked in id order first (as ``save_completed`` locks them), so
    a cancel and a store of the same questions queue instead of deadlocking;
    the update's own ``status = pending`` guard leaves a question that was
    answered meanwhile answered.
    """
    cancelled: list[Cancelled] = []
    deltas = stats.new_deltas()
    ids = sorted(set(question_ids))
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start:start + ID_CHUNK]
        connection.execute(select(Q.c.question_id).where(and_(Q.c.question_id.in_(chunk), Q.c.status == State.PENDING))
                           .order_by(Q.c.question_id).with_for_update()).all()
        rows = connection.execute(
            update(Q).where(and_(Q.c.question_id.in_(chunk), Q.c.status == State.PENDING))
            .values(status=State.CANCELLED, updated_at=to_datetime(now))
            .returning(Q.c.question_id, Q.c.epoch, Q.c.accepted_at)).all()
        for row in rows:
            stats.add_transition(deltas, (State.PENDING, None), (State.CANCELLED, None))
            cancelled.append(Cancelled(row.question_id, row.epoch, to_seconds(row.accepted_at)))
        owners.close(connection, [row.question_id for row in rows])
    count(connection, deltas)
    return cancelled


def question_ids(connection: Connection, batch_id: str) -> list[str]:
    """The distinct questions of a batch."""
    return list(connection.execute(select(BI.c.question_id).where(BI.c.batch_id == batch_id).distinct()).scalars())


def batched(connection: Connection, question_ids: Sequence[str]) -> set[str]:
    """Those of ``question_ids`` that some batch asked (the ``batch_items.question_id`` index)."""
    if not question_ids:
        return set()
    return set(connection.execute(select(BI.c.question_id).where(BI.c.question_id.in_(list(question_ids)))
                                  .distinct()).scalars())


def cancel(connection: Connection, batch_id: str, now: float) -> tuple[Optional[Batch], list[Cancelled]]:
    """Cancel a batch: it turns ``cancelling`` (once) and its pending questions ``cancelled``.

    Idempotent: a second cancel finds nothing pending and the batch past
    ``in_progress``, and changes nothing.  The questions are cancelled even
    when the batch had already left ``in_progress`` by a race with the timer:
    nothing of a finished batch is pending, so that cancels nothing.
    """
    batch = get(connection, batch_id)
    if batch is None:
        return None, []
    new = after_cancel(batch.status)
    if new is not None and connection.execute(
            update(B).where(and_(B.c.batch_id == batch_id, B.c.status == batch.status))
            .values(status=new, cancelled_at=to_datetime(now), updated_at=to_datetime(now))).rowcount:
        deltas = stats.new_deltas()
        _move(deltas, batch.status, new)
        count(connection, deltas)
    cancelled = cancel_questions(connection, question_ids(connection, batch_id), now)
    return get(connection, batch_id), cancelled


def finish(connection: Connection, batch: Batch, new: BatchStatus, now: float) -> bool:
    """Move the batch from the state it was read in to ``new``; False when another worker moved it first."""
    moved = connection.execute(
        update(B).where(and_(B.c.batch_id == batch.batch_id, B.c.status == batch.status))
        .values(status=new, finished_at=to_datetime(now), updated_at=to_datetime(now))).rowcount
    if moved:
        deltas = stats.new_deltas()
        _move(deltas, batch.status, new)
        count(connection, deltas)
    return bool(moved)


def unfinished(connection: Connection, limit: int) -> list[Batch]:
    """Batches not finished yet (read through the status index; unordered, so nothing is sorted)."""
    return [batch_of(row) for row in connection.execute(
        select(B).where(B.c.status.in_([BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING])).limit(limit))]


def unnotified(connection: Connection, limit: int) -> list[Batch]:
    """Finished batches whose end-of-batch hook has not completed yet (the (status, notified_at) index)."""
    return [batch_of(row) for row in connection.execute(
        select(B).where(and_(B.c.status.in_(sorted(FINISHED)), B.c.notified_at.is_(None))).limit(limit))]


def mark_notified(connection: Connection, batch_id: str, now: float) -> None:
    """The end-of-batch hook ran for the batch."""
    connection.execute(update(B).where(B.c.batch_id == batch_id).values(notified_at=to_datetime(now)))


def question_status(connection: Connection, question_id: str) -> Optional[str]:
    """The question's status in the database, or ``None`` when it has no row."""
    return connection.execute(select(Q.c.status).where(Q.c.question_id == question_id)).scalar()


def is_cancelled(connection: Connection, question_id: str, epoch: int) -> bool:
    """Whether the question was cancelled in ``epoch`` (one primary-key probe)."""
    row = connection.execute(select(Q.c.status, Q.c.epoch).where(Q.c.question_id == question_id)).first()
    return row is not None and row.status == State.CANCELLED and row.epoch == epoch


def create_within(connection: Connection, batch: NewBatch, distinct: int, bound: Optional[int]) -> bool:
    """Create the batch unless its ``distinct`` questions would take its key past ``bound`` questions in flight.

    The key's row is locked first, as :mod:`qastream.db.inflight` does, so
    two submissions of one key count one after the other.  Checked once for
    the whole batch, counting every distinct question as new (some may be
    answered already): items are then accepted without a per-item bound, so
    a batch is never accepted in part.
    """
    if bound is not None and batch.owner_key_id is not None:
        connection.execute(select(K.c.id).where(K.c.id == batch.owner_key_id).with_for_update()).all()
        if owners.open_counts(connection, [batch.owner_key_id])[batch.owner_key_id] + distinct > bound:
            return False
    create(connection, batch)
    return True
