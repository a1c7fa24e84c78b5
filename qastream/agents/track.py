"""question-events -> the status and attempts tables: ``track``, their only writer.

``track`` consumes the events topic, whose partition count equals the
tables', and folds each event with the pure functions of
:mod:`qastream.policy.lifecycle`.  Because every event carries its version,
replaying the topic after a crash rebuilds exactly the same tables.
An expiry event (:mod:`qastream.agents.expire`) removes a finished question
from both, here, so that each table keeps one writer.

Being the only writer, ``track`` is also where live status streams
(``GET /status/{id}/events``) learn of a change: after each fold it hands
the new record to the question's watchers on this worker, which never
waits (:mod:`qastream.streaming.watchers`).
"""

from __future__ import annotations

from typing import cast

import faust

from qastream.app import app, topics
from qastream.models import StatusEvent
from qastream.policy.lifecycle import EXPIRE, StatusEventFields, expires, fold_attempts, fold_status
from qastream.streaming.watchers import Update
from qastream.tables.status import attempts_table, status_table


def apply(event: StatusEventFields) -> None:
    """Fold one event into both tables (called inside ``track``'s stream)."""
    qid = event["question_id"]
    if event["stage"] == EXPIRE:
        if expires(status_table.get(qid), event):
            del status_table[qid]  # a tombstone in the changelog: compaction drops the question
            if qid in attempts_table:
                del attempts_table[qid]
        return
    status = fold_status(status_table.get(qid), event)
    if status is not None:
        status_table[qid] = status
    attempts = fold_attempts(attempts_table.get(qid), event)
    if attempts is not None:
        attempts_table[qid] = attempts
    if status is not None:
        app.runtime.watchers.publish(qid, Update(status, attempts_table.get(qid)))


@app.agent(topics.events)
async def track(events: faust.StreamT[StatusEvent]) -> None:
    """Fold status events into the status and attempts tables."""
    async for event in events:
        apply(cast(StatusEventFields, event.asdict()))  # StatusEventFields mirrors StatusEvent (a test keeps them in step)
