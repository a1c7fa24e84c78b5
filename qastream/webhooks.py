"""Scheduling webhook events, and reading how their deliveries went: the API other stages call.

:func:`schedule` announces one event (a batch ended, a question ended) to one
URL; :func:`schedule_many` does it for several in one transaction (the store
and dead-letter stages, which work in batches).  Both are idempotent: the
delivery id is derived from the event kind, the subject id and its epoch
(:func:`qastream.policy.webhooks.delivery_id`), the database keeps the first
row of an id, and a delivery already delivered or failed is not sent again.
So a stage that crashed after scheduling and runs again schedules nothing
twice, and a receiver gets at most one successful POST per delivery id in
normal operation.  A delivery scheduled again while still pending is sent
again only if no attempt has started (its first message may have been lost
with the crash); once attempts are under way its own retries, with their
back-off, carry it on.

Sending happens elsewhere, never in the caller's time: the delivery goes to
the deliveries topic, where ``deliver_webhooks`` (qastream.agents.webhooks)
makes each attempt in a task of its own and parks the waits between them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional, Sequence

from qastream.app import storage, topics
from qastream.db.webhooks import Delivery, NewDelivery
from qastream.models import WebhookDelivery
from qastream.policy.webhooks import (
    DeliveryState,
    EventKind,
    Notification,
    delivery_id,
    event_body,
    question_notifications,
)
from qastream.services.storage import until_written, write_isolated

logger = logging.getLogger(__name__)


async def schedule(kind: EventKind, subject_id: str, url: str, payload: Mapping[str, Any], *,
                   epoch: int = 1) -> Optional[Delivery]:
    """Announce ``kind`` for ``subject_id`` at ``url`` with ``payload`` as the event's ``data``.

    Returns the delivery as recorded (already there if scheduled before:
    its body and url are the first call's), or ``None`` if the database
    refused the row (logged).  ``url`` must have passed
    :func:`qastream.policy.webhook_targets.check_url`; it is checked again
    at every attempt.  Waits out a database outage; never raises because the
    broker refused the send (the delivery stays pending and the sweep in
    qastream.agents.webhooks sends it again).
    """
    found = await schedule_many([Notification(kind, subject_id, url, payload, epoch)])
    return found[0] if found else None


async def schedule_many(notifications: Sequence[Notification]) -> list[Delivery]:
    """:func:`schedule` for several events in one transaction; the deliveries recorded, in order."""
    if not notifications:
        return []
    now = time.time()
    new = []
    for n in notifications:
        ident = delivery_id(n.kind, n.subject_id, n.epoch)
        try:
            body = event_body(n.kind, ident, n.subject_id, n.data, now)
        except (TypeError, ValueError) as exc:  # data JSON cannot carry: this event fails alone
            logger.error("webhook %s of %s not scheduled: its data is not JSON (%r)", n.kind, n.subject_id, exc)
            continue
        new.append(NewDelivery(ident, str(n.kind), n.subject_id, n.url, body, now))
    saved, refused = await until_written(lambda: write_isolated(storage.insert_deliveries, new),
                                         f"{len(new)} webhook deliveries")
    for rejection in refused:
        logger.error("database refused webhook delivery %s (%s of %s): %s", rejection.item.delivery_id,
                     rejection.item.kind, rejection.item.subject_id, rejection.reason)
    for delivery, created in saved:
        if delivery.state != DeliveryState.PENDING:
            logger.info("webhook delivery %s is %s already; not sent again", delivery.delivery_id, delivery.state)
        elif created or delivery.attempts == 0:
            await send(delivery, created)
        else:  # attempts are under way: their own messages carry it on, and the sweep finds it if they were lost
            logger.info("webhook delivery %s is pending after %d attempt(s); left to its retries",
                        delivery.delivery_id, delivery.attempts)
    return [delivery for delivery, _ in saved]


async def announce_questions(kind: EventKind, outcomes: Sequence[tuple[str, int, Mapping[str, Any]]]) -> None:
    """Schedule ``kind`` for the questions of ``outcomes`` (id, epoch, data) that carry a ``webhook_url``.

    For the store and dead-letter stages, after their batch is written: one
    read of the targets, one transaction of deliveries.  Never raises, so a
    webhook can never fail the batch it announces (a failure is logged).
    """
    if not outcomes:
        return
    try:
        ids = [qid for qid, _, _ in outcomes]
        found = await until_written(lambda: storage.webhook_targets(ids), f"webhook targets of {len(ids)} question(s)")
        await schedule_many(question_notifications(kind, outcomes, found))
    except Exception as exc:
        logger.error("scheduling %s webhooks for %d question(s) failed: %r", kind, len(outcomes), exc)


async def send(delivery: Delivery, created: bool = False) -> None:
    """Put a pending delivery's next attempt on the deliveries topic; a failed send is logged, not raised."""
    message = WebhookDelivery(delivery_id=delivery.delivery_id, kind=delivery.kind, subject_id=delivery.subject_id,
                              url=delivery.url, body=delivery.body, attempt=delivery.attempts + 1)
    try:
        await topics.webhooks.send(key=delivery.delivery_id, value=message)
    except Exception as exc:
        logger.error("sending webhook delivery %s%s to its topic failed (%r); the sweep sends it later",
                     delivery.delivery_id, "" if created else " again", exc)


async def delivery_state(kind: EventKind, subject_id: str) -> Optional[dict[str, Any]]:
    """The newest delivery of ``kind`` for ``subject_id`` as an API shows it (state, attempts, last error), or ``None``."""
    found = await storage.deliveries_of(subject_id, str(kind))
    return found[-1].summary() if found else None


async def deliveries(subject_id: str) -> list[dict[str, Any]]:
    """Every delivery of ``subject_id``, oldest first, as an API shows them."""
    return [d.summary() for d in await storage.deliveries_of(subject_id)]
