"""Acceptance with access control: who asked each question, and the bound on a key's questions in flight.

:func:`accept` wraps :func:`qastream.db.queries.accept` in the same
transaction (one group commit of ``POST /query`` submissions): it refuses
the submissions that would take a key past its ``max_in_flight``, accepts
the rest, and records the asking key of each as an owner row, open unless
the answer was already stored.  On PostgreSQL the keys with a bound are
locked first (``FOR UPDATE``, in id order), so two workers accepting for
one key count one after the other and cannot both take its last slot;
SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Connection, select

from qastream.db import owners, queries
from qastream.db.keys import K
from qastream.db.owners import OWN
from qastream.db.queries import FOUND, Acceptance, Q, Submission, to_datetime
from qastream.db.upsert import insert_for
from qastream.policy.lifecycle import State

#: The kind of an :class:`Acceptance` refused because its key has ``max_in_flight`` questions open.
OVER_LIMIT = "over_limit"


def _bounds(submissions: Sequence[Submission]) -> dict[int, int]:
    """Key id -> max_in_flight, for the keys of this batch that have a bound."""
    return {s.owner.key_id: s.owner.limits.max_in_flight for s in submissions
            if s.owner is not None and s.owner.limits.max_in_flight is not None}


def _refused(connection: Connection, submissions: Sequence[Submission], bounds: dict[int, int]) -> set[int]:
    """Positions of the submissions that would take their key past its bound, counted in order.

    A question already stored does not count (it is answered at once), nor
    one the key has open already (asking again adds nothing).
    """
    connection.execute(select(K.c.id).where(K.c.id.in_(sorted(bounds))).order_by(K.c.id).with_for_update()).all()
    counts = owners.open_counts(connection, bounds)
    ids = sorted({s.question_id for s in submissions})
    done = set(connection.execute(select(Q.c.question_id).where(Q.c.question_id.in_(ids),
                                                                Q.c.status == State.COMPLETED)).scalars())
    held = owners.open_pairs(connection, ids)
    refused = set()
    for position, s in enumerate(submissions):
        if s.owner is None or s.owner.key_id not in bounds or s.question_id in done:
            continue
        pair = (s.owner.key_id, s.question_id)
        if pair in held:
            continue
        if counts[s.owner.key_id] >= bounds[s.owner.key_id]:
            refused.add(position)
            continue
        counts[s.owner.key_id] += 1
        held.add(pair)
    return refused


def _record(connection: Connection, pairs: Sequence[tuple[Submission, Acceptance]]) -> None:
    """Owner rows for accepted submissions: open unless found; a question asked again reopens its row."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for s, outcome in pairs:
        assert s.owner is not None
        key = (s.owner.key_id, s.question_id)
        is_open = outcome.kind != FOUND or rows.get(key, {}).get("open", False)
        asked: datetime = to_datetime(s.at)
        rows[key] = {"key_id": key[0], "question_id": key[1], "open": is_open, "asked_at": asked}
    if rows:
        statement = insert_for(connection, OWN)
        connection.execute(statement.on_conflict_do_update(index_elements=["key_id", "question_id"],
                                                           set_={"open": statement.excluded.open}),
                           [rows[key] for key in sorted(rows)])


def accept(connection: Connection, submissions: Sequence[Submission]) -> list[Acceptance]:
    """:func:`queries.accept` for the submissions within their keys' bounds; ``over_limit`` for the others."""
    bounds = _bounds(submissions)
    refused = _refused(connection, submissions, bounds) if bounds else set()
    taken = iter(queries.accept(connection, [s for i, s in enumerate(submissions) if i not in refused]))
    outcomes = [Acceptance(OVER_LIMIT, s.question_id, State.PENDING, 0, s.at, s.original_answer)
                if i in refused else next(taken) for i, s in enumerate(submissions)]
    _record(connection, [(s, a) for s, a in zip(submissions, outcomes) if s.owner is not None and a.kind != OVER_LIMIT])
    return outcomes
