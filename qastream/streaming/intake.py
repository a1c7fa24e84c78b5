"""Putting accepted questions on their lane's topic (:mod:`qastream.policy.lanes`).

``POST /query`` enqueues on the interactive lane (with its own time-out,
:func:`qastream.web.query.enqueue`); a batch enqueues its questions with
:func:`enqueue_bulk`, so that they are generated only with the LLM slots no
interactive question is waiting for.
"""

from __future__ import annotations

from typing import Iterable

from qastream.app import topics
from qastream.models import Job
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import Stage
from qastream.tables.status import report


async def enqueue_on(lane: Lane, jobs: Iterable[Job]) -> int:
    """Produce each job to ``lane``'s topic, marked with the lane, and report it queued; returns how many.

    Each job must be accepted first (written to the database as pending by
    ``storage.accept``): the database is the store of record, so a question
    whose message is lost is re-enqueued by reconciliation -- on this lane,
    which its ``queued`` status records.  A send that raises (the broker is
    unreachable) propagates: the jobs not yet sent are pending in the
    database and left to reconciliation the same way.
    """
    topic = topics.intake(lane)
    count = 0
    for job in jobs:
        on_lane = job if job.lane == lane else job.derive(lane=lane)
        await topic.send(key=on_lane.question_id, value=on_lane)
        await report(on_lane, Stage.QUEUED)
        count += 1
    return count


async def enqueue_bulk(jobs: Iterable[Job]) -> int:
    """Enqueue accepted questions of a batch on the bulk lane; returns how many were sent.

    Build each job as ``POST /query`` does after ``storage.accept``
    (``Job(question_id, question_text, original_answer, accepted_at, epoch)``
    from the :class:`~qastream.db.queries.Acceptance`); the lane is set here.
    Call it only for acceptances of kind ``created`` or ``resubmitted``:
    questions already answered or in flight need no message.
    """
    return await enqueue_on(Lane.BULK, jobs)
