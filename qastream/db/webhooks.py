"""The statements on ``webhook_deliveries`` and ``questions.webhook_url``.

Every write is guarded by what it expects to find, so two workers, or a
redelivered message and the original, never both act: :func:`insert` keeps
the first row of a delivery id, :func:`claim` lets one sender make a given
attempt, :func:`record` changes only the attempt that was claimed, and
:func:`take_stale` hands a lost delivery to one worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, Table, and_, select, update

from qastream.db.queries import Q, to_datetime, to_seconds
from qastream.db.schema import WebhookDeliveryRow
from qastream.db.upsert import insert_for
from qastream.policy.webhooks import DeliveryState

W: Table = WebhookDeliveryRow.__table__  # type: ignore[assignment]  # declarative tables are Tables

#: Longest error text kept with a delivery.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to schedule: the event's id, kind, subject, target and exact body."""

    delivery_id: str
    kind: str
    subject_id: str
    url: str
    body: str
    at: float


@dataclass(frozen=True)
class Delivery:
    """A ``webhook_deliveries`` row as the stages and ``GET /batches/{id}`` read it."""

    delivery_id: str
    kind: str
    subject_id: str
    url: str
    body: str
    state: str
    attempts: int
    last_status: Optional[int]
    last_error: Optional[str]
    created_at: float
    updated_at: float
    delivered_at: Optional[float]

    def summary(self) -> dict[str, Any]:
        """What an API response shows of it (not the body: the receiver has it)."""
        return {"delivery_id": self.delivery_id, "event": self.kind, "url": self.url, "state": self.state,
                "attempts": self.attempts, "last_status": self.last_status, "last_error": self.last_error,
                "created_at": self.created_at, "updated_at": self.updated_at, "delivered_at": self.delivered_at}


def _delivery(row: Any) -> Delivery:
    return Delivery(delivery_id=row.delivery_id, kind=row.kind, subject_id=row.subject_id, url=row.url, body=row.body,
                    state=row.state, attempts=row.attempts, last_status=row.last_status, last_error=row.last_error,
                    created_at=to_seconds(row.created_at), updated_at=to_seconds(row.updated_at),
                    delivered_at=to_seconds(row.delivered_at) if row.delivered_at is not None else None)


def insert(connection: Connection, deliveries: Sequence[NewDelivery]) -> list[tuple[Delivery, bool]]:
    """Insert the deliveries not there yet; each one's row and whether this call created it, in order.

    A delivery id already present keeps its row (its body, url and state):
    scheduling an event again is how a re-run stage finds it pending or done.
    """
    if not deliveries:
        return []
    rows = {d.delivery_id: {"delivery_id": d.delivery_id, "kind": d.kind, "subject_id": d.subject_id, "url": d.url,
                            "body": d.body, "state": DeliveryState.PENDING, "attempts": 0,
                            "created_at": to_datetime(d.at), "updated_at": to_datetime(d.at)} for d in deliveries}
    created = set(connection.execute(
        insert_for(connection, W).on_conflict_do_nothing(index_elements=["delivery_id"]).returning(W.c.delivery_id),
        list(rows.values())).scalars())
    found = {r.delivery_id: _delivery(r) for r in connection.execute(select(W).where(W.c.delivery_id.in_(sorted(rows))))}
    return [(found[d.delivery_id], d.delivery_id in created) for d in deliveries]


def claim(connection: Connection, delivery_id: str, attempt: int, at: float) -> bool:
    """Record that attempt ``attempt`` starts; ``False`` when it may not (done already, or made already).

    A redelivered message, or the copy a sweep re-sent, finds ``attempts``
    already at its number (or the delivery delivered) and makes no request.
    """
    return bool(connection.execute(
        update(W).where(and_(W.c.delivery_id == delivery_id, W.c.state == DeliveryState.PENDING,
                             W.c.attempts < attempt))
        .values(attempts=attempt, updated_at=to_datetime(at))).rowcount)


def record(connection: Connection, delivery_id: str, attempt: int, state: DeliveryState, status: Optional[int],
           error: Optional[str], at: float) -> bool:
    """Record how claimed attempt ``attempt`` went; ``False`` when another attempt has moved the row on."""
    values: dict[str, Any] = {"state": state, "last_status": status,
                              "last_error": error[:MAX_ERROR_CHARS] if error else None, "updated_at": to_datetime(at)}
    if state == DeliveryState.DELIVERED:
        values["delivered_at"] = to_datetime(at)
    return bool(connection.execute(
        update(W).where(and_(W.c.delivery_id == delivery_id, W.c.state == DeliveryState.PENDING,
                             W.c.attempts == attempt)).values(**values)).rowcount)


def of_subject(connection: Connection, subject_id: str, kind: Optional[str] = None) -> list[Delivery]:
    """The deliveries announcing events of ``subject_id`` (of one ``kind`` when given), oldest first."""
    query = select(W).where(W.c.subject_id == subject_id)
    if kind is not None:
        query = query.where(W.c.kind == kind)
    return [_delivery(r) for r in connection.execute(query.order_by(W.c.created_at, W.c.delivery_id))]


def take_stale(connection: Connection, before: float, now: float, limit: int) -> list[Delivery]:
    """Pending deliveries untouched since ``before``, each taken by this caller alone (``updated_at`` set to ``now``).

    Their message was lost (a worker died with the attempt in flight, or the
    broker refused the send): the caller sends them again.
    """
    stale = [_delivery(r) for r in connection.execute(
        select(W).where(and_(W.c.state == DeliveryState.PENDING, W.c.updated_at < to_datetime(before)))
        .order_by(W.c.updated_at).limit(limit))]
    taken = []
    for d in stale:
        if connection.execute(update(W).where(and_(W.c.delivery_id == d.delivery_id,
                                                   W.c.state == DeliveryState.PENDING,
                                                   W.c.updated_at < to_datetime(before)))
                              .values(updated_at=to_datetime(now))).rowcount:
            taken.append(d)
    return taken


def targets(connection: Connection, question_ids: Sequence[str]) -> dict[str, str]:
    """Question id -> its ``webhook_url``, for the questions that have one."""
    if not question_ids:
        return {}
    rows = connection.execute(select(Q.c.question_id, Q.c.webhook_url)
                              .where(and_(Q.c.question_id.in_(sorted(set(question_ids))), Q.c.webhook_url.isnot(None))))
    return {r.question_id: r.webhook_url for r in rows}
