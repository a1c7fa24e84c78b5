"""The batch timer: end batches whose every question is terminal, then call the end-of-batch hook.

A batch owns no state of its questions, so nothing tells it that its last
question ended: the leader worker looks every ``batch_check_interval_seconds``
(one worker, so the counts are read once per tick, not once per worker).
Leadership can move during a rebalance, so the end is also a conditional
update (:func:`qastream.db.batches.finish`): if two workers race, one
moves the batch and the other finds it moved.

The hook runs after the batch is ended and ``notified_at`` is set only when
the hook returns: a worker that dies in between leaves the batch ended and
not notified, and the next tick (on whichever worker leads then) calls the
hook again.  The hook must therefore be idempotent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from qastream.app import app, settings, storage
from qastream.db.batches import Batch
from qastream.policy.batches import BatchStatus, RequestCounts, next_status
from qastream.policy.webhooks import EventKind
from qastream.streaming.timers import survives_failures
from qastream.webhooks import schedule

logger = logging.getLogger(__name__)

#: Batches looked at per tick, oldest first: bounds a tick's database work whatever the backlog.
BATCHES_PER_TICK = 100


def webhook_kind(status: str) -> EventKind:
    """The webhook event of a batch that ended in ``status``."""
    return EventKind.BATCH_CANCELLED if status == BatchStatus.CANCELLED else EventKind.BATCH_COMPLETED


def batch_event_data(batch: Batch, counts: RequestCounts) -> dict[str, Any]:
    """The ``data`` of a batch's webhook event: what ``GET /batches/{id}`` says of it when it ended."""
    return {"batch_id": batch.batch_id, "status": batch.status, "request_counts": counts.as_json(),
            "created_at": batch.created_at, "finished_at": batch.finished_at, "cancelled_at": batch.cancelled_at,
            "metadata": batch.metadata}


async def batch_finished(batch: Batch) -> None:
    """The end-of-batch hook: called once a batch is ``completed`` or ``cancelled`` (again after a crash).

    With a ``webhook_url`` it schedules the batch's webhook.  Scheduling is
    idempotent by (event, batch id) (:func:`qastream.webhooks.schedule`), so
    the call repeated after a crash delivers once.
    """
    logger.info("batch %s ended %s (%d question(s))", batch.batch_id, batch.status, batch.total)
    if batch.webhook_url:
        counts = await storage.batch_counts(batch)
        await schedule(webhook_kind(batch.status), batch.batch_id, batch.webhook_url, batch_event_data(batch, counts))


async def end_batches(now: float) -> int:
    """End the unfinished batches whose every item is terminal; returns how many this call ended."""
    ended = 0
    for batch in await storage.unfinished_batches(BATCHES_PER_TICK):
        counts = await storage.batch_counts(batch)
        new = next_status(batch.status, counts, now=now, cancelled_at=batch.cancelled_at,
                          grace=settings.batch_cancel_grace_seconds)
        if new is not None and await storage.finish_batch(batch, new, now):
            logger.info("batch %s: %s -> %s (%s)", batch.batch_id, batch.status, new, counts.as_json())
            ended += 1
    return ended


async def notify_finished() -> int:
    """Call the hook for every ended batch not notified yet, then record it; returns how many."""
    batches = await storage.unnotified_batches(BATCHES_PER_TICK)
    for batch in batches:
        await batch_finished(batch)
        await storage.mark_batch_notified(batch.batch_id, time.time())
    return len(batches)


@app.timer(settings.batch_check_interval_seconds, on_leader=True)
@survives_failures
async def finish_batches() -> None:
    """End finished batches and run their hook (the leader only)."""
    await end_batches(time.time())
    await notify_finished()
