"""The expiry timer: finished questions leave the status and attempts tables.

Without it the tables (and their standby copies) keep every question ever
seen.  A table may only be written by its one writer inside its
co-partitioned stream, so the timer does not delete anything itself: for
each finished question of a partition this worker actively owns that has
not moved for ``status_retention_seconds``, it sends an expiry event to the
events topic, and ``track`` deletes the entry if it is still the version the
timer saw (:func:`qastream.policy.lifecycle.expires`).  ``GET /status`` then
answers from the database, the store of record, and reconciliation never
looks at the question again: it only considers questions pending there.
"""

from __future__ import annotations

import logging
import time

from qastream.agents.reconcile import owned
from qastream.app import app, settings, topics
from qastream.models import expiry_event
from qastream.policy.lifecycle import due_to_expire
from qastream.streaming.timers import survives_failures
from qastream.tables.status import status_table

logger = logging.getLogger(__name__)

#: An expiry event still not applied after this long is sent again (it was lost with the topic).
RESEND_AFTER_SECONDS = 60.0

#: A quarter of the retention, so an entry stays at most 25 % longer than asked, between
#: 0.5 s (short retentions in tests) and 60 s (a scan of the table is cheap at that rate).
EXPIRY_INTERVAL_SECONDS = min(60.0, max(0.5, settings.status_retention_seconds / 4))


async def send_expiries(now: float) -> int:
    """Send one expiry event per finished question past its retention in this worker's partitions.

    An event already sent for the same version is not sent again while
    ``track`` has not applied it (a backlog on the events topic) for
    :data:`RESEND_AFTER_SECONDS`; sending it twice is harmless, only wasteful.
    """
    retention = settings.status_retention_seconds
    due = {qid: record for qid, record in list(status_table.items()) if due_to_expire(record, now, retention)}
    sent = app.runtime.expiring
    for qid in [qid for qid in sent if qid not in due]:
        del sent[qid]  # applied (or the question moved on): forget it
    count = 0
    fresh = [qid for qid, record in due.items()
             if qid not in sent or sent[qid][0] != list(record["version"]) or now - sent[qid][1] > RESEND_AFTER_SECONDS]
    for qid in await owned(fresh):
        record = due[qid]
        await topics.events.send(key=qid, value=expiry_event(record, now))
        sent[qid] = (list(record["version"]), now)
        count += 1
    if count:
        logger.debug("sent %d expiry event(s)", count)
    return count


@app.timer(EXPIRY_INTERVAL_SECONDS)
@survives_failures
async def expire_finished() -> None:
    """Ask ``track`` to drop this worker's finished questions older than the retention."""
    if settings.status_retention_seconds <= 0 or app.rebalancing:
        return
    await send_expiries(time.time())
