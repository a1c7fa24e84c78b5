"""Putting questions back on the graph: dead-letter replay, lost-message recovery.

The database is the store of record (a question is written there before
it is produced), so a question whose messages were lost -- the memory-only
development broker restarted, a topic was deleted -- can always be sent
again.  Every path goes through :func:`qastream.db.queries.resubmit`, which
starts a new epoch: whatever is left of the old one becomes stale.
"""

from __future__ import annotations

import logging
from typing import Iterable

from qastream.app import topics
from qastream.db.queries import Acceptance
from qastream.models import Job
from qastream.policy.lifecycle import Stage
from qastream.tables.status import report

logger = logging.getLogger(__name__)


def job_for(acceptance: Acceptance) -> Job:
    """The first job of a (re)submitted question: a fresh attempt and retry budget."""
    return Job(question_id=acceptance.question_id, question_text=acceptance.question_text or "",
               original_answer=acceptance.original_answer, accepted_at=acceptance.accepted_at,
               epoch=acceptance.epoch)


async def enqueue(acceptances: Iterable[Acceptance]) -> int:
    """Produce each question to the pending topic and report it queued; returns how many."""
    count = 0
    for acceptance in acceptances:
        job = job_for(acceptance)
        await topics.pending.send(key=job.question_id, value=job)
        await report(job, Stage.QUEUED)
        count += 1
    return count
