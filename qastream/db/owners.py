"""The statements on ``question_owners``: which key asked which question, and which are still open.

A row is open from the moment its key's question is accepted until the
question is stored or dead-lettered: :func:`close` runs in the same
transaction as ``save_completed``/``save_failed``, so the count the in-flight
bound reads (:mod:`qastream.db.inflight`) is the database's, the same for
every worker, with no cache or Redis to keep in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import Connection, Table, and_, exists, false, func, literal, select, update

from qastream.db.schema import QuestionOwnerRow, QuestionRow
from qastream.db.upsert import insert_for

OWN: Table = QuestionOwnerRow.__table__  # type: ignore[assignment]  # declarative tables are Tables
Q: Table = QuestionRow.__table__  # type: ignore[assignment]


def record_answered(connection: Connection, key_id: int, question_id: str, at: datetime) -> None:
    """The key asked a question the cache answered: it owns it, closed (an answer never counts in flight).

    Written only if the question has a row (a cache filled from elsewhere may
    hold answers this database never saw) and the key does not own it yet.
    """
    rows = select(literal(key_id), Q.c.question_id, false(), literal(at, OWN.c.asked_at.type)) \
        .where(Q.c.question_id == question_id)
    connection.execute(insert_for(connection, OWN).from_select(["key_id", "question_id", "open", "asked_at"], rows)
                       .on_conflict_do_nothing(index_elements=["key_id", "question_id"]))


def close(connection: Connection, question_ids: Sequence[str]) -> None:
    """The questions are terminal: their owners' rows stop counting (read through the partial index by question)."""
    if question_ids:
        connection.execute(update(OWN).where(and_(OWN.c.question_id.in_(sorted(set(question_ids))), OWN.c.open))
                           .values(open=False))


def owns(connection: Connection, key_id: int, question_id: str) -> bool:
    """Whether the key asked the question (one primary-key probe)."""
    return bool(connection.execute(select(exists().where(and_(OWN.c.key_id == key_id,
                                                               OWN.c.question_id == question_id)))).scalar())


def open_counts(connection: Connection, key_ids: Iterable[int]) -> dict[int, int]:
    """How many open questions each key has (only the open rows are read, through the partial index by key)."""
    ids = sorted(set(key_ids))
    if not ids:
        return {}
    rows = connection.execute(select(OWN.c.key_id, func.count()).where(and_(OWN.c.key_id.in_(ids), OWN.c.open))
                              .group_by(OWN.c.key_id))
    counted = {key_id: n for key_id, n in rows}
    return {key_id: counted.get(key_id, 0) for key_id in ids}


def open_pairs(connection: Connection, question_ids: Iterable[str]) -> set[tuple[int, str]]:
    """(key, question) pairs already open among these questions: asking again adds nothing to a key's count."""
    ids = sorted(set(question_ids))
    if not ids:
        return set()
    rows = connection.execute(select(OWN.c.key_id, OWN.c.question_id).where(and_(OWN.c.question_id.in_(ids), OWN.c.open)))
    return {(key_id, question_id) for key_id, question_id in rows}
