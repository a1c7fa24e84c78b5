"""The status and attempts tables, and ``track``: their only writer.

Stages never write tables themselves (an agent with ``concurrency > 1``
must not, and a table may only be written from a stream co-partitioned with
its changelog).  They send :class:`~qastream.models.StatusEvent` records to
the events topic, keyed by question id; ``track`` consumes that topic, whose
partition count equals the tables', and folds each event with the pure
functions of :mod:`qastream.lifecycle`.  Because every event carries its
version, replaying the topic after a crash rebuilds exactly the same tables.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import faust

from qastream.app import app, settings, topics
from qastream.broker import table_options
from qastream.lifecycle import fold_attempts, fold_status
from qastream.models import Job, StatusEvent, event_for

logger = logging.getLogger(__name__)

status_table = app.Table("status", **table_options(settings, settings.partitions_events),
                         help="question_id -> where the question is (state, stage, attempt, result)")
attempts_table = app.Table("attempts", **table_options(settings, settings.partitions_events),
                           help="question_id -> LLM generations and error retries of the current epoch")


async def report(job: Job, stage: str, *, detail: Optional[str] = None,
                 result: Optional[dict[str, Any]] = None) -> None:
    """Tell the status table that ``job`` reached ``stage``."""
    await topics.events.send(key=job.question_id, value=event_for(job, stage, detail=detail, result=result))


def apply(event: dict[str, Any]) -> None:
    """Fold one event into both tables (called inside ``track``'s stream)."""
    qid = event["question_id"]
    status = fold_status(status_table.get(qid), event)
    if status is not None:
        status_table[qid] = status
    attempts = fold_attempts(attempts_table.get(qid), event)
    if attempts is not None:
        attempts_table[qid] = attempts


@app.agent(topics.events)
async def track(events: faust.StreamT[StatusEvent]) -> None:
    """Fold status events into the status and attempts tables."""
    async for event in events:
        apply(event.asdict())
