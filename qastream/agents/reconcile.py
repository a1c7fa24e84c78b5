"""Reconciliation: re-enqueue accepted questions whose messages were lost.

Every ``reconcile_interval_seconds`` a worker looks at pending questions
accepted more than ``reconcile_after_seconds`` ago whose key it owns (the
partition of the events topic, which is the status table's) and that its
status table knows nothing about: their messages are gone (the memory-only
development broker restarted, say).  They start a new epoch and go back to
questions-pending.  Questions the status table knows are in flight and left
alone.
"""

from __future__ import annotations

import logging
import time

from qastream.app import app, settings, storage, topics
from qastream.requeue import enqueue
from qastream.routing import partition_of
from qastream.tables.status import status_table
from qastream.timers import survives_failures

logger = logging.getLogger(__name__)


async def owned_and_unknown(ids: list[str]) -> list[str]:
    """The ids whose status partition this worker owns and whose status it does not know."""
    events = topics.events.get_topic_name()
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == events}
    return [qid for qid in ids if await partition_of(events, qid) in active and status_table.get(qid) is None]


@app.timer(settings.reconcile_interval_seconds)
@survives_failures
async def reconcile() -> None:
    """Re-enqueue this worker's pending questions that nothing is processing."""
    if app.rebalancing:
        return
    now = time.time()
    candidates = await storage.pending_before(now - settings.reconcile_after_seconds)
    lost = await owned_and_unknown(candidates)
    if not lost:
        return
    taken = await storage.resubmit(now, statuses=["pending"], question_ids=lost)
    count = await enqueue(taken)
    logger.warning("reconciliation re-enqueued %d pending question(s) with no status (messages lost)", count)
